"""`LLM("github:Phi-3.5-mini-instruct")`: a model behind a provider's API, with the local API.

`LLM(...)` hands provider model strings (``github:``, ``azure:``, ``nim:``, ``ollama:``,
``openai:``) to this class, so switching between a local and a cloud model is one string.
The chat template, tokenizer and weights live with the provider: there is no token-level API
(`generator()`, token-id prompts, beam search) here.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from slmkit.errors import InvalidParameterError
from slmkit.outputs import chain_outputs, join_outputs
from slmkit.providers.base import ProviderRequest
from slmkit.providers.registry import get_provider, parse_model_string
from slmkit.types import Message, RequestOutput, SamplingParams


class RemoteLLM:
    def __init__(self, model: str, *, system_prompt: str | None = None, context_length: int | None = None,
                 threads: int | None = None, backend: str = "auto", dtype: str = "auto", device: str = "auto",
                 quantize: str = "none", **_ignored):
        parsed = parse_model_string(model)
        if parsed is None:
            raise InvalidParameterError("model", f"{model!r} is not a provider model string (e.g. github:Phi-3.5-mini-instruct)")
        local_only = (("context_length", context_length, None), ("threads", threads, None),
                      ("backend", backend, "auto"), ("dtype", dtype, "auto"), ("device", device, "auto"),
                      ("quantize", quantize, "none"))
        for name, value, unset in local_only:
            if value != unset:
                raise InvalidParameterError(name, f"is decided by the provider for {model}; leave it unset")
        if _ignored.get("draft_model") is not None or _ignored.get("speculative") == "draft":
            raise InvalidParameterError("draft_model", f"{model} runs at its provider; draft-model speculation "
                                        "runs in the local engines (llama.cpp, torch)")
        started = time.perf_counter()
        self.name = model
        self.provider_name, self.provider_model = parsed
        self.provider = get_provider(self.provider_name)
        self.system_prompt = system_prompt
        self.default_params = SamplingParams()
        self.load_seconds = time.perf_counter() - started

    def chat(self, messages: Sequence[Message | dict], params: SamplingParams | None = None, *,
             stream: bool = False, images: Sequence | None = None,
             num_crops: int | None = None) -> RequestOutput | Iterator[RequestOutput]:
        if num_crops is not None:
            raise InvalidParameterError("num_crops", "a provider model crops images itself; leave num_crops unset")
        if not messages:
            raise InvalidParameterError("messages", "at least one message is needed")
        msgs = [Message.coerce(m) for m in messages]
        if images:  # the provider takes them as OpenAI image parts of the last message
            from slmkit.types import ImagePart, TextPart

            parts = [ImagePart.from_file(i) if isinstance(i, (str, Path)) else i for i in images]
            if not all(isinstance(p, ImagePart) for p in parts):
                raise InvalidParameterError("images", "a provider model takes image files or ImageParts")
            last = msgs[-1]
            text = last.content if isinstance(last.content, str) else None
            msgs[-1] = Message(last.role, [*parts, TextPart(text)] if text is not None else [*parts, *last.content])
        if self.system_prompt and not any(m.role == "system" for m in msgs):
            msgs.insert(0, Message("system", self.system_prompt))
        return self._run(ProviderRequest(self.provider_model, messages=msgs, params=params or self.default_params),
                         stream)

    def generate(self, prompt: str, params: SamplingParams | None = None, *,
                 stream: bool = False) -> RequestOutput | Iterator[RequestOutput]:
        if not isinstance(prompt, str):
            raise InvalidParameterError("prompt", f"{self.name} takes text prompts, not token ids")
        return self._run(ProviderRequest(self.provider_model, prompt=prompt, params=params or self.default_params),
                         stream)

    def _run(self, request: ProviderRequest, stream: bool):
        request.request_id = request.request_id or f"req-{uuid.uuid4().hex[:12]}"
        deltas = self.provider.stream(request)
        first = next(deltas)  # connection, auth and parameter errors surface here
        if stream:
            return chain_outputs(first, deltas)
        return join_outputs([first, *deltas])

    def close(self) -> None:
        pass

    def __enter__(self) -> "RemoteLLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
