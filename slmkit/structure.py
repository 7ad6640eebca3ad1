"""What shape the output must have: a JSON object, a JSON Schema, a regex, a Lark (or GBNF)
grammar, or a call of the given tools — turned into one llguidance grammar and checked here,
when the request is made, so a bad schema is a 400 naming the reason and never a failure mid-stream.

The grammar text does not depend on a tokenizer; `slmkit.sampling.grammar` compiles it per
tokenizer and runs it. This module imports no other slmkit module but `errors`, so `types`
(which validates `SamplingParams` with it) stays free of import circles.

Tool calls use the Hermes / Qwen 2.5 format, which tool-aware templates of those families print
and our default system block (`default_tools_block`) teaches other models::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from llguidance import LLMatcher
from llguidance.gbnf_to_lark import gbnf_to_lark

from slmkit.errors import InvalidParameterError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_CHOICES = ("auto", "none", "required")

# Compact JSON with fixed separators: no free whitespace for a small model to loop in, and more
# bytes the grammar forces (fast-forwarded, never sampled). A schema's own "x-guidance" wins.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Tool:
    """A function the model may call: OpenAI's ``{"type": "function", "function": {...}}``."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __hash__(self) -> int:
        return hash((self.name, self.description, json.dumps(self.parameters, sort_keys=True)))

    @classmethod
    def coerce(cls, value: "Tool | dict[str, Any]", where: str = "tools") -> "Tool":
        """From a `Tool`, OpenAI's / Ollama's tool dict, or a bare function dict."""
        if isinstance(value, Tool):
            return value
        if not isinstance(value, dict):
            raise InvalidParameterError(where, f"each tool must be an object, got {value!r}")
        if "function" in value:
            if value.get("type", "function") != "function":
                raise InvalidParameterError(f"{where}.type", f"only 'function' tools exist, got {value.get('type')!r}")
            value = value["function"]
        if not isinstance(value, dict):
            raise InvalidParameterError(f"{where}.function", "must be an object")
        name = value.get("name")
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-." for c in name):
            raise InvalidParameterError(f"{where}.function.name", "must be a non-empty name of letters, digits, "
                                        f"'_', '-' or '.', got {name!r}")
        parameters = value.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidParameterError(f"{where}.function.parameters", "must be a JSON Schema object")
        description = value.get("description") or ""
        if not isinstance(description, str):
            raise InvalidParameterError(f"{where}.function.description", "must be a string")
        return cls(name, description, parameters)

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's shape (what tool-aware chat templates and providers take)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def default_tools_block(tools: list[Tool]) -> str:
    """The system-prompt block that describes `tools` to a model whose chat template cannot
    (Qwen 2.5's wording, which small instruct models follow well)."""
    listing = "\n".join(json.dumps(t.to_dict(), ensure_ascii=False) for t in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{listing}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            f"{TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n"
            f'{TOOL_CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{TOOL_CALL_CLOSE}')


def json_schema_grammar(schema: Any, param: str = "json_schema") -> str:
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise InvalidParameterError(param, f"must be a JSON Schema object, got {type(schema).__name__}")
    try:
        return LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(param, f"is not a usable JSON Schema: {exc}") from None


def checked_json_schema(schema: Any, param: str, *, strict: bool = True) -> Any:
    """`schema` as `SamplingParams.json_schema` takes it, compiled now so a schema that cannot be
    followed is refused under the caller's own name for the field (`param`). Without `strict`,
    keywords the grammar cannot enforce are ignored (best effort); with it they are refused, as
    OpenAI's strict mode refuses schemas it cannot guarantee."""
    if isinstance(schema, dict):
        options = schema.get("x-guidance", {})
        if not isinstance(options, dict):
            raise InvalidParameterError(param, "x-guidance must be an object of llguidance options")
        if not strict:
            schema = {**schema, "x-guidance": {"lenient": True, **options}}
    _validated(json_schema_grammar(schema, param), param)
    return schema


def lark_grammar(source: str) -> str:
    """A Lark grammar as llguidance reads it; GBNF (llama.cpp's ``root ::= ...``) is converted."""
    if "::=" in source:
        try:
            source = gbnf_to_lark(source)
        except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions on bad input
            raise InvalidParameterError("grammar", f"is not valid GBNF: {exc}") from None
    return LLMatcher.grammar_from_lark(source)


def _tool_call_rule(tools: list[Tool]) -> str:
    """One call: the name fixed per tool, the arguments that tool's JSON Schema."""
    alternatives = []
    for tool in tools:
        prefix = json.dumps('{"name": ' + json.dumps(tool.name) + ', "arguments": ')
        schema = json.dumps({"x-guidance": JSON_OPTIONS, **tool.parameters})
        alternatives.append(f"{prefix} %json {schema} \"}}\"")
    return "call: " + "\n    | ".join(alternatives)


def tools_grammar(tools: list[Tool], choice: str, parallel: bool) -> str | None:
    """The grammar of a reply under ``tool_choice``: ``none`` free text (None), ``required`` or a
    name one call or more, ``auto`` text or calls (constrained from ``<tool_call>`` on)."""
    if not tools or choice == "none":
        return None
    allowed = tools if choice in ("auto", "required") else [t for t in tools if t.name == choice]
    # Each block ends with its newline, so after a call the model weighs ending against opening
    # another; a named function is called once (OpenAI's meaning of naming it).
    more = " block*" if parallel and choice in ("auto", "required") else ""
    rest = json.dumps("\n") + " call " + json.dumps("\n" + TOOL_CALL_CLOSE + "\n") + more
    block = f"block: {json.dumps(TOOL_CALL_OPEN)} rest_of_block\nrest_of_block: {rest.replace(more, '')}"
    if choice == "auto":
        # Text that never holds the trigger, or any text up to the trigger and then calls: the
        # lexer cannot end a greedy text lexeme before "<tool_call>", so the prefix ends lazily
        # at it (llguidance's suffix=), and from there on the call is constrained.
        start = ("start: TEXT | before_call rest\n"
                 f"TEXT: /(?s:.+)/ & ~/(?s:.*{TOOL_CALL_OPEN}.*)/\n"
                 f"before_call[suffix={json.dumps(TOOL_CALL_OPEN)}]: /(?s:.*)/")
    else:
        start = "start: block" + more
    return LLMatcher.grammar_from_lark(f"{start}\nrest: {rest}\n{block}\n{_tool_call_rule(allowed)}\n")


@lru_cache(maxsize=256)
def _validated(grammar: str, param: str) -> str:
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise InvalidParameterError(param, _reason(error))
    return grammar


def _reason(error: str) -> str:
    """llguidance's message without its source excerpt: the first line and any ``error:`` line."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    kept = lines[:1] + [line for line in lines[1:] if line.startswith("error:")]
    return " ".join(kept) if kept else "invalid grammar"


@dataclass(frozen=True)
class Structure:
    """What a request asks of its output's shape (at most one of the constraints, or tools)."""

    response_format: str = "text"
    json_schema: Any = None
    regex: str | None = None
    grammar: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True

    def check(self) -> None:
        """Raise `InvalidParameterError` for what cannot be honoured, with the reason."""
        asked = [name for name, on in (("response_format", self.response_format == "json_object"),
                                       ("json_schema", self.json_schema is not None),
                                       ("regex", self.regex is not None),
                                       ("grammar", self.grammar is not None)) if on]
        if len(asked) > 1:
            raise InvalidParameterError(asked[1], f"choose one output constraint, got {' and '.join(asked)}")
        if self.regex is not None and (not isinstance(self.regex, str) or not self.regex):
            raise InvalidParameterError("regex", "must be a non-empty regular expression")
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar.strip()):
            raise InvalidParameterError("grammar", "must be a non-empty Lark or GBNF grammar")
        if not isinstance(self.tool_choice, str) or not self.tool_choice:
            raise InvalidParameterError("tool_choice", "must be 'auto', 'none', 'required' or a tool's name")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise InvalidParameterError("tools", "tool names must be unique")
        if self.tool_choice not in TOOL_CHOICES and self.tool_choice not in names:
            known = ", ".join(names) if names else "none given"
            raise InvalidParameterError("tool_choice", f"names no tool: {self.tool_choice!r} (tools: {known})")
        if self.tool_choice == "required" and not self.tools:
            raise InvalidParameterError("tool_choice", "'required' needs tools")
        if self.calls_tools and asked:
            raise InvalidParameterError(asked[0], "cannot be combined with tools; use tool_choice 'none' or drop it")
        for i, tool in enumerate(self.tools):
            _validated(json_schema_grammar(tool.parameters, f"tools[{i}].function.parameters"),
                       f"tools[{i}].function.parameters")
        self.grammar_text()

    @property
    def calls_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def grammar_text(self) -> str | None:
        """The llguidance grammar of the whole reply, validated; None when the output is free."""
        if self.response_format == "json_object":
            return _validated(json_schema_grammar({"type": "object"}, "response_format"), "response_format")
        if self.json_schema is not None:
            return _validated(json_schema_grammar(self.json_schema), "json_schema")
        if self.regex is not None:
            return _validated(LLMatcher.grammar_from_regex(self.regex), "regex")
        if self.grammar is not None:
            return _validated(lark_grammar(self.grammar), "grammar")
        grammar = tools_grammar(list(self.tools), self.tool_choice, self.parallel_tool_calls)
        return None if grammar is None else _validated(grammar, "tools")
