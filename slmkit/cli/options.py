"""Command-line flags shared by `slm run` and `slm generate`: every sampling parameter."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any, Optional

import typer

from slmkit.errors import InvalidParameterError
from slmkit.types import SamplingParams

_S = "Sampling"
_M = "Model"

MaxTokens = Annotated[Optional[int], typer.Option("--max-tokens", "-n", help="Most tokens to generate.", rich_help_panel=_S)]
Temperature = Annotated[Optional[float], typer.Option(help="0 = greedy; higher = more random.", rich_help_panel=_S)]
TopK = Annotated[Optional[int], typer.Option(help="Keep the k most likely tokens (0 = off).", rich_help_panel=_S)]
TopP = Annotated[Optional[float], typer.Option(help="Nucleus sampling mass (1 = off).", rich_help_panel=_S)]
MinP = Annotated[Optional[float], typer.Option(help="Drop tokens below min_p x the top probability.", rich_help_panel=_S)]
RepetitionPenalty = Annotated[Optional[float], typer.Option("--repetition-penalty", "--repeat-penalty", help="Penalize repeated tokens (1 = off).", rich_help_panel=_S)]
FrequencyPenalty = Annotated[Optional[float], typer.Option(help="OpenAI frequency penalty (-2..2).", rich_help_panel=_S)]
PresencePenalty = Annotated[Optional[float], typer.Option(help="OpenAI presence penalty (-2..2).", rich_help_panel=_S)]
Seed = Annotated[Optional[int], typer.Option(help="Random seed for reproducible sampling.", rich_help_panel=_S)]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop string (repeatable).", rich_help_panel=_S)]
StopTokenIds = Annotated[Optional[list[int]], typer.Option("--stop-token-id", help="Stop at this token id (repeatable).", rich_help_panel=_S)]
LogitBias = Annotated[Optional[list[str]], typer.Option("--logit-bias", help="TOKEN_ID=BIAS (repeatable).", rich_help_panel=_S)]
NumBeams = Annotated[Optional[int], typer.Option(help="Beam search with this many beams.", rich_help_panel=_S)]
LengthPenalty = Annotated[Optional[float], typer.Option(help="Beam score = logprob / length^penalty.", rich_help_panel=_S)]
IgnoreEos = Annotated[bool, typer.Option("--ignore-eos", help="Keep generating past end-of-turn.", rich_help_panel=_S)]
ContextLength = Annotated[Optional[int], typer.Option(help="KV cache size in tokens (default: model's, max 8192).", rich_help_panel=_M)]
Backend = Annotated[str, typer.Option(help="Engine: auto (llama.cpp for GGUF, ONNX Runtime GenAI for ONNX folders, torch for HF folders), llamacpp, ortgenai, torch or vllm (CUDA nodes, slmkit[vllm]).", rich_help_panel=_M)]
Dtype = Annotated[str, typer.Option(help="torch engine weights: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.", rich_help_panel=_M)]
Device = Annotated[str, typer.Option(help="torch engine device: auto, cpu, cuda, cuda:N.", rich_help_panel=_M)]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads (default: cores available).", rich_help_panel=_M)]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Print load time, TTFT, prompt and decode tokens/s.")]


@dataclass
class SamplingFlags:
    """The flags as given; None means "not given, keep the model's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    logit_bias: list[str] | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    ignore_eos: bool = False

    def apply(self, defaults: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == [] or (f.name == "ignore_eos" and not value):
                continue
            changes[f.name] = parse_logit_bias(value) if f.name == "logit_bias" else value
        return defaults.updated(**changes)


def parse_logit_bias(items: list[str]) -> dict[int, float]:
    bias = {}
    for item in items:
        token, sep, value = item.partition("=")
        try:
            bias[int(token)] = float(value)
        except ValueError:
            raise InvalidParameterError("logit_bias", f"expected TOKEN_ID=BIAS, got {item!r}") from None
        if not sep:
            raise InvalidParameterError("logit_bias", f"expected TOKEN_ID=BIAS, got {item!r}")
    return bias


_ALIASES = {"repeat_penalty": "repetition_penalty", "num_predict": "max_tokens", "n": "max_tokens"}


def parse_setting(params: SamplingParams, name: str, raw: str) -> SamplingParams:
    """`/set NAME VALUE` in the REPL: convert by the field's type, validate, return new params."""
    name = _ALIASES.get(name.replace("-", "_"), name.replace("-", "_"))
    known = {f.name for f in fields(SamplingParams)} - {"logits_processors"}
    if name not in known:
        raise InvalidParameterError(name, f"unknown setting; try one of {', '.join(sorted(known))}")
    current = getattr(params, name)
    try:
        if name == "stop":
            value: Any = [raw] if raw else []
        elif name == "stop_token_ids":
            value = [int(x) for x in raw.replace(",", " ").split()]
        elif name == "logit_bias":
            value = parse_logit_bias(raw.split())
        elif name == "ignore_eos":
            value = raw.lower() in ("1", "true", "yes", "on")
        elif name in ("max_tokens", "seed") and raw.lower() in ("none", "off", ""):
            value = None
        elif isinstance(current, bool):
            value = raw.lower() in ("1", "true", "yes", "on")
        elif name in ("max_tokens", "seed", "top_k", "num_beams"):
            value = int(raw)
        else:
            value = float(raw)
    except ValueError:
        raise InvalidParameterError(name, f"{raw!r} is not a valid value") from None
    return params.updated(**{name: value})
