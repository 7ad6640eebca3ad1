"""One exception tree for slmkit.

Every error carries a message written for the person who hit it (what went wrong and what to do
next) and an HTTP status, so the CLI can print it as one line and the server can turn it into the
API's own error body without a lookup table.
"""

from __future__ import annotations


class SlmkitError(Exception):
    """Base class: a user-facing error with an HTTP status and an OpenAI-style error type."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(SlmkitError):
    """The caller asked for something malformed or impossible (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidParameterError(InvalidRequestError):
    """One named parameter has a bad value; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}", param=param, code="invalid_parameter")
        self.detail = message  # the message without the parameter's name, to re-raise it under another


class ContextLengthError(InvalidRequestError):
    """Prompt (plus the tokens asked for) does not fit the model's context window."""

    def __init__(self, message: str):
        super().__init__(message, code="context_length_exceeded")


class AuthenticationError(SlmkitError):
    """Missing or wrong API key (HTTP 401)."""

    status_code = 401
    error_type = "authentication_error"

    def __init__(self, message: str):
        super().__init__(message, code="invalid_api_key")


class PayloadTooLargeError(InvalidRequestError):
    """The request body is over the server's limit (HTTP 413)."""

    status_code = 413


class RateLimitError(SlmkitError):
    """Too many requests are queued; retry after `retry_after` seconds (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, code="rate_limit_exceeded")
        self.retry_after = retry_after


class OverloadedError(SlmkitError):
    """The server cannot take work now (shutting down, engine failed) (HTTP 503, with
    ``Retry-After``)."""

    status_code = 503
    error_type = "service_unavailable"
    retry_after = 1


class EngineDeadError(OverloadedError):
    """A model's engine thread has died; its requests fail until the model is reloaded."""

    def __init__(self, reason: str | None = None):
        why = f" ({reason})" if reason else ""
        super().__init__(f"the model's engine has stopped{why}; the server reloads it on the next "
                         "request, or restart the server", code="engine_dead")


class RequestTimeoutError(SlmkitError):
    """A request ran past the server's per-request time limit (HTTP 504)."""

    status_code = 504
    error_type = "timeout"

    def __init__(self, message: str):
        super().__init__(message, code="timeout")


class ModelNotFoundError(SlmkitError):
    """No model of that name in the store or the catalogue (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"

    def __init__(self, message: str):
        super().__init__(message, param="model", code="model_not_found")


class ModelLoadError(SlmkitError):
    """A model file exists but cannot be loaded (broken, unsupported architecture, ...)."""

    status_code = 500
    error_type = "server_error"


class OfflineError(SlmkitError):
    """The operation needs the internet, which this machine does not have (HTTP 503)."""

    status_code = 503
    error_type = "service_unavailable"


class BackendUnavailableError(SlmkitError):
    """An optional engine is asked for but its package is not installed."""

    status_code = 501
    error_type = "not_implemented"


class UnsupportedOperationError(SlmkitError):
    """An operation of an API slmkit speaks that it cannot do (pushing to a registry) (HTTP 501)."""

    status_code = 501
    error_type = "not_implemented"


class MissingCredentialError(SlmkitError):
    """A remote provider needs a credential or endpoint that is not configured; `variable` names
    the environment variable to set (a server configuration problem, hence HTTP 500)."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, provider: str, variable: str, message: str):
        super().__init__(message, code="missing_credential")
        self.provider = provider
        self.variable = variable


class ProviderConfigError(SlmkitError):
    """``providers.toml`` cannot be read or names something unknown."""

    status_code = 500
    error_type = "server_error"


class ProviderError(SlmkitError):
    """A remote provider failed or refused a request (HTTP 502 unless a subclass says otherwise).

    `provider` is its name ("github", "ollama", ...); `upstream_status` the HTTP status it
    answered with, None when no answer came (connection failure, broken stream)."""

    status_code = 502
    error_type = "provider_error"

    def __init__(self, message: str, *, provider: str, upstream_status: int | None = None,
                 param: str | None = None, code: str | None = None):
        super().__init__(message, param=param, code=code)
        self.provider = provider
        self.upstream_status = upstream_status


class ProviderAuthError(ProviderError):
    """The provider refused our credential (its 401) or its access (its 403)."""

    error_type = "provider_authentication_error"


class ProviderNotFoundError(ProviderError):
    """The provider does not know the model (or the base URL points to the wrong place)."""

    status_code = 404
    error_type = "not_found_error"


class ProviderRequestError(ProviderError):
    """The provider rejected the request itself (its 400 / 413 / 422)."""

    status_code = 400
    error_type = "invalid_request_error"


class ProviderRateLimitError(ProviderError):
    """The provider kept answering 429; `retry_after` is its wait in seconds when it said one."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None):
        super().__init__(message, provider=provider, upstream_status=429, code="rate_limit_exceeded")
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """The provider cannot be reached, or kept failing with 5xx after the retries."""

    status_code = 503
    error_type = "service_unavailable"


class ProviderTimeoutError(ProviderError):
    """The provider sent nothing for longer than the read timeout."""

    status_code = 504
    error_type = "timeout"


class AudioOutputError(SlmkitError):
    """Speech was synthesized but cannot be played: no audio player or no sound device."""

    status_code = 503
    error_type = "service_unavailable"
