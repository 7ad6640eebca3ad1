"""Chat messages to a prompt string, with the model's own Jinja chat template.

Models ship their prompt format as a Jinja template (``tokenizer.chat_template`` in a GGUF,
``chat_template`` in tokenizer_config.json) written for Hugging Face's ``apply_chat_template``.
`ChatTemplate` renders such templates in the same kind of environment (sandboxed, ``trim_blocks``,
``lstrip_blocks``, ``raise_exception``, ``tojson``, ``strftime_now``, ``{% generation %}``), so a
template behaves here as it does in ``transformers``. Templates come from downloaded files, so they
run in Jinja's immutable sandbox (no attribute escapes, no mutating the messages) and under a
budget (`RenderBudget`): a render stops with a clear error past a time limit, and no value or
output may grow past a size limit, checked before the big multiplications and powers are
computed and after every concatenation, call and filter (so nothing grows past twice the limit).

For models whose metadata has no template, a few built-in ones cover the common formats.
"""

from __future__ import annotations

import json
import re
import time
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Sequence

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from slmkit import limits
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


class _TemplateLimit(jinja2.TemplateError):
    """A render went over its budget (time or size)."""


class RenderBudget:
    """The limits of one render: a deadline and the largest string or list it may build."""

    def __init__(self, seconds: float = limits.CHAT_TEMPLATE_SECONDS, chars: int = limits.CHAT_TEMPLATE_CHARS):
        self.seconds, self.chars = seconds, chars
        self.deadline = time.monotonic() + seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _TemplateLimit(f"it ran longer than {self.seconds:g} s")

    def allow(self, length: int) -> None:
        if length > self.chars:
            raise _TemplateLimit(f"it built a value of {length:,} characters or items; the limit is {self.chars:,}")

    def sized(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, dict)):
            self.allow(len(value))
        elif isinstance(value, int) and value.bit_length() > limits.CHAT_TEMPLATE_INT_BITS:
            raise _TemplateLimit("it built too large a number")  # squaring in a loop doubles its size
        return value


_BUDGET: ContextVar[RenderBudget | None] = ContextVar("chat_template_budget", default=None)


def _budget() -> RenderBudget:
    # Outside `ChatTemplate.render` (compile-time constant folding) sizes are checked, time is not.
    return _BUDGET.get() or RenderBudget()


def _guard_iter(iterable: Any) -> Any:
    """Every ``{% for %}`` iterates through this: nested loops cannot outlive the deadline."""
    budget = _budget()
    deadline, now = budget.deadline, time.monotonic
    for item in iterable:
        if now() > deadline:
            budget.tick()
        yield item


def _guard_size(value: Any) -> Any:
    """Every ``~`` concatenation passes through this (doubling a string in a loop stops at the limit)."""
    return _budget().sized(value)


def _check_args(budget: RenderBudget, args: Any, kwargs: dict[str, Any]) -> None:
    # Widths and counts (center, ljust, indent, wordwrap, lipsum, "{:>N}", "%Ns") allocate what
    # they are given: refuse one over the limit before the call, not after the allocation.
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > budget.chars:
            raise _TemplateLimit(f"it passed {value:,} as a size; the limit is {budget.chars:,}")


def _check_format(budget: RenderBudget, fmt: Any) -> None:
    if isinstance(fmt, str):
        budget.allow(max((int(n) for n in _DIGITS.findall(fmt)), default=0))


_DIGITS = re.compile(r"\d{7,}")  # numbers in a format string that could be widths over the limit


def _replace_size(text: str, old: str, new: str, count: int | None = None) -> int:
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


class _GuardedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus the render budget on operators and calls."""

    intercepted_binops = frozenset(["*", "**", "%"])  # "+" chains are rewritten into `_guard_sum`

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    budget.allow(len(seq) * max(n, 0))
        elif operator == "**" and isinstance(left, int) and isinstance(right, (int, float)) and abs(left) > 1:
            if right * left.bit_length() > limits.CHAT_TEMPLATE_INT_BITS:
                raise _TemplateLimit(f"{left} ** {right} is too large a number")
        elif operator == "%":
            _check_format(budget, left)
        return budget.sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's own signature
        budget = _budget()
        if time.monotonic() > budget.deadline:
            budget.tick()
        if args or kwargs:
            _check_args(budget, args, kwargs)
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            name = getattr(method, "__name__", "")
            if name in ("format", "format_map"):
                _check_format(budget, owner)
            elif name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
                budget.allow(_replace_size(owner, *args[:3]))
        return budget.sized(super().call(__context, __obj, *args, **kwargs))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Guards().visit(super()._parse(source, name, filename))


class _Guards(NodeTransformer):
    """Route every loop, ``~`` and ``+`` chain through the guards: an AST rewrite into filters
    (which compiled templates call directly, not through the sandbox's `call`), so plain output
    costs nothing and ``a + b + c + d`` (how templates build a turn) costs one function call."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _guard("iter", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _guard("size", nodes.Concat(node.nodes))

    def visit_Add(self, node: nodes.Add) -> nodes.Node:
        operands = [node.right]
        while isinstance(node.left, nodes.Add):
            node = node.left
            operands.append(node.right)
        operands.append(node.left)
        first, *rest = [self.visit(op) for op in reversed(operands)]
        return _guard("sum", first, rest)


def _guard(kind: str, value: nodes.Expr, args: list[nodes.Expr] | None = None) -> nodes.Filter:
    return nodes.Filter(value, f"__slmkit_guard_{kind}", args or [], [], None, None)


def _guard_sum(*operands: Any) -> Any:
    """``a + b + ...`` left to right, as Jinja computes it; the total may not pass the size limit
    (strings and lists only grow by their operands, so the last result is the largest)."""
    result = operands[0]
    for operand in operands[1:]:
        result = result + operand
    if isinstance(result, (str, list, tuple)) and len(result) > limits.CHAT_TEMPLATE_CHARS:
        _budget().allow(len(result))
    return result


def _guarded_filter(function: Any) -> Any:
    # A pass_context / pass_eval_context filter gets that object first, then the value.
    first = 1 if hasattr(function, "jinja_pass_arg") else 0
    name = getattr(function, "__name__", "")

    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        value, rest = (args[first], args[first + 1:]) if len(args) > first else (None, ())
        _check_args(budget, rest, kwargs)
        if name == "do_format":
            _check_format(budget, value)
        elif name == "do_replace" and len(rest) >= 2 and all(isinstance(a, str) for a in (value, *rest[:2])):
            budget.allow(_replace_size(str(value), *rest[:3]))
        return budget.sized(function(*args, **kwargs))

    if hasattr(function, "jinja_pass_arg"):
        guarded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = _GuardedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.filters = {name: _guarded_filter(f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters.update(__slmkit_guard_iter=_guard_iter, __slmkit_guard_size=_guard_size,
                       __slmkit_guard_sum=_guard_sum)
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
    def supports_tools(self) -> bool:
        """Whether the template renders ``tools`` itself (Qwen 2.5, Llama 3.1, Hermes, ...)."""
        return "tools" in meta.find_undeclared_variables(_ENVIRONMENT.parse(self.source))

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
            "messages": [_message_dict(message) for message in coerced],
            "add_generation_prompt": add_generation_prompt,
        }
        budget = RenderBudget()
        token = _BUDGET.set(budget)
        try:
            parts: list[str] = []
            keep, size, chars, deadline, now = parts.append, 0, budget.chars, budget.deadline, time.monotonic
            for part in self._template.generate(**context):
                size += len(part)
                if size > chars or now() > deadline:
                    budget.allow(size)
                    budget.tick()
                keep(part)
            return "".join(parts)
        except _TemplateLimit as error:
            raise InvalidRequestError(
                f"The chat template of {self._label} was stopped: {error.message} "
                f"(limits: {budget.seconds:g} s, {budget.chars:,} characters); use a built-in template "
                f"({', '.join(BUILTIN_TEMPLATES)}) or fix the model's"
            ) from error
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
        finally:
            _BUDGET.reset(token)


def _message_dict(message: Message) -> dict[str, Any]:
    """A message as Hugging Face templates read it: tool calls with their arguments as objects."""
    data: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        data["tool_calls"] = [{"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments_dict()}}
                              for c in message.tool_calls]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    return data


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
