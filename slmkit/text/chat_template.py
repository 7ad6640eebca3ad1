"""Chat messages to a prompt string, with the model's own Jinja chat template.

Models ship their prompt format as a Jinja template (``tokenizer.chat_template`` in a GGUF,
``chat_template`` in tokenizer_config.json) written for Hugging Face's ``apply_chat_template``.
`ChatTemplate` renders such templates in the same kind of environment (sandboxed, ``trim_blocks``,
``lstrip_blocks``, ``raise_exception``, ``tojson``, ``strftime_now``, ``{% generation %}``), so a
template behaves here as it does in ``transformers``. Templates come from downloaded files, so they
run in Jinja's immutable sandbox: no attribute escapes, no mutating the messages.

For models whose metadata has no template, a few built-in ones cover the common formats.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Sequence

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from slmkit.errors import InvalidParameterError, InvalidRequestError
from slmkit.types import Message, refuse_images

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Phi-3 / Phi-3.5 instruct: roles as tokens, an empty system message is skipped, and a prompt
# that does not ask for a reply ends with eos (as the released Phi-3.5-mini template does).
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' or message['content'] %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Gemma has no system role: like the Gemma 3 template, a leading system message becomes the start
# of the first turn. Unlike it, roles need not alternate, since this is a fallback for files
# without a template and refusing a conversation there helps no one.
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_prefix = messages[0]['content'] | trim + '\\n\\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set first_prefix = '' %}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_prefix if loop.first else '')"
    " + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "phi3": PHI3,
    "gemma": GEMMA,
    "llama3": LLAMA3,
}
"""Jinja sources of the built-in templates, by name (HF-compatible: they render the same there)."""

# (bos_token, eos_token) each family's tokenizer uses, for `ChatTemplate.builtin`.
_BUILTIN_SPECIAL_TOKENS: dict[str, tuple[str, str]] = {
    "chatml": ("", "<|im_end|>"),
    "phi3": ("", "<|endoftext|>"),
    "gemma": ("<bos>", "<eos>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
}


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}``: HF marks assistant text for training masks
    with it; for inference it only has to render its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _TemplateRaised(jinja2.TemplateError):
    """What ``raise_exception(msg)`` raises: the template's own message for the caller."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Replaces Jinja's own tojson, which HTML-escapes <, > and & (wrong inside a prompt).
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENVIRONMENT = _make_environment()


class ChatTemplate:
    """A compiled chat template: ``render(messages)`` gives the prompt text.

    ``bos_token`` and ``eos_token`` are the texts of the model's special tokens, which many
    templates print (Gemma and Llama 3 start with ``{{ bos_token }}``). A prompt that starts with
    the BOS text should be tokenized without adding another BOS.
    """

    def __init__(
        self, source: str, *, bos_token: str = "", eos_token: str = "", name: str | None = None
    ):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        try:
            self._template = _ENVIRONMENT.from_string(source)
        except jinja2.TemplateError as error:
            raise InvalidRequestError(
                f"The chat template of {self._label} is broken and cannot be compiled ({error}); "
                "pass a working template or use a built-in one "
                f"({', '.join(BUILTIN_TEMPLATES)})."
            ) from error

    @classmethod
    def builtin(
        cls, name: str, *, bos_token: str | None = None, eos_token: str | None = None
    ) -> "ChatTemplate":
        """A built-in template (see `BUILTIN_TEMPLATES`).

        ``bos_token`` / ``eos_token`` default to the texts that model family uses.
        """
        if name not in BUILTIN_TEMPLATES:
            raise InvalidParameterError(
                "chat_template", f"no built-in template {name!r}; known: {sorted(BUILTIN_TEMPLATES)}"
            )
        default_bos, default_eos = _BUILTIN_SPECIAL_TOKENS[name]
        return cls(
            BUILTIN_TEMPLATES[name],
            bos_token=default_bos if bos_token is None else bos_token,
            eos_token=default_eos if eos_token is None else eos_token,
            name=name,
        )

    @property
    def _label(self) -> str:
        return f"'{self.name}'" if self.name else "this model"

    def render(
        self,
        messages: Sequence[Message | dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        system_prompt: str | None = None,
        **extra: Any,
    ) -> str:
        """Render the conversation into prompt text.

        ``system_prompt``, when not None and the conversation has no system message, is put in
        front as one (a model manifest's default system prompt). ``extra`` becomes template
        variables, as in ``apply_chat_template`` (``tools``, ``enable_thinking``, ...).
        """
        coerced = [Message.coerce(message) for message in messages]
        if not coerced:
            raise InvalidParameterError("messages", "must contain at least one message")
        refuse_images(coerced, "this model")
        if system_prompt is not None and not any(m.role == "system" for m in coerced):
            coerced.insert(0, Message(role="system", content=system_prompt))
        context: dict[str, Any] = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": None,
            "documents": None,
            **extra,
            "messages": [{"role": message.role, "content": message.text} for message in coerced],
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return self._template.render(**context)
        except _TemplateRaised as error:
            raise InvalidRequestError(
                f"The chat template of {self._label} rejected the messages: {error.message}"
            ) from error
        except Exception as error:
            # Any failure inside the template (undefined names, sandbox refusals, type errors
            # in its expressions) is a property of this template and these messages.
            raise InvalidRequestError(
                f"The chat template of {self._label} failed to render: "
                f"{type(error).__name__}: {error}"
            ) from error


def guess_builtin_template(architecture: str, token_texts: set[str]) -> str:
    """Pick the built-in template for a model without one, from its special tokens.

    The vocabulary says more than the architecture (a ``llama`` GGUF may be SmolLM, which speaks
    ChatML), so tokens are checked first; ChatML is the fallback.
    """
    if "<|im_start|>" in token_texts:
        return "chatml"
    if "<|end|>" in token_texts and "<|assistant|>" in token_texts:
        return "phi3"
    if "<start_of_turn>" in token_texts:
        return "gemma"
    if "<|eot_id|>" in token_texts or "<|start_header_id|>" in token_texts:
        return "llama3"
    architecture = architecture.lower()
    if architecture.startswith(("phi3", "phimoe")):
        return "phi3"
    if architecture.startswith("gemma"):
        return "gemma"
    return "chatml"
