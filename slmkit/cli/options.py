"""Command-line flags shared by `slm run` and `slm generate`: every sampling parameter."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
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
_F = "Output format"
Format = Annotated[Optional[str], typer.Option("--format", help="json: the answer is one JSON object.", rich_help_panel=_F)]
JsonSchema = Annotated[Optional[str], typer.Option("--json-schema", help="FILE with a JSON Schema the answer follows.", rich_help_panel=_F)]
Regex = Annotated[Optional[str], typer.Option("--regex", help="The answer matches this regular expression.", rich_help_panel=_F)]
Grammar = Annotated[Optional[str], typer.Option("--grammar", help="FILE with a Lark or GBNF grammar the answer follows.", rich_help_panel=_F)]
ContextLength = Annotated[Optional[int], typer.Option(help="KV cache size in tokens (default: model's, max 8192).", rich_help_panel=_M)]
Backend = Annotated[str, typer.Option(help="Engine: auto (llama.cpp for GGUF, ONNX Runtime GenAI for ONNX folders, OpenVINO for OpenVINO folders, MLX for MLX folders, torch for HF folders it implements, transformers for other HF folders), llamacpp, ortgenai, openvino (slmkit[openvino]), mlx (slmkit[mlx]), torch, transformers (slmkit[transformers]) or vllm (CUDA nodes, slmkit[vllm]).", rich_help_panel=_M)]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="transformers engine: run the model code a local HF folder brings (config.json auto_map, e.g. Phi-3-small's). Read it first.", rich_help_panel=_M)]
Dtype = Annotated[str, typer.Option(help="torch engine weights: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.", rich_help_panel=_M)]
Quantize = Annotated[str, typer.Option(help="torch engine weights: none, or int8 (weight-only, per channel; computes in bfloat16 unless --dtype says otherwise).", rich_help_panel=_M)]
Device = Annotated[str, typer.Option(help="torch and transformers engine device: auto, cpu, cuda, cuda:N (qnn is refused: README, Qualcomm NPU).", rich_help_panel=_M)]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads (default: cores available).", rich_help_panel=_M)]
_V = "Images (vision models)"
Images = Annotated[Optional[list[str]], typer.Option("--image", help="An image file for a vision model (repeatable); in the REPL also /image PATH.", rich_help_panel=_V)]
Video = Annotated[Optional[str], typer.Option("--video", help="A video file (GIF, MP4, ...): --frames frames of it go to a vision model as images.", rich_help_panel=_V)]
Frames = Annotated[int, typer.Option("--frames", help="How many frames --video gives, sampled evenly.", rich_help_panel=_V)]
NumCrops = Annotated[Optional[int], typer.Option("--num-crops", help="Crops per image (default: the model's preprocessor_config.json; Phi-3.5 advises 4 for many frames).", rich_help_panel=_V)]
Speculative = Annotated[Optional[str], typer.Option("--speculative", help="off; ngram: draft tokens from the "
                        "prompt and output; draft: from --draft-model (the default with it). Drafts are verified in "
                        "one forward: same output, faster when they are right.")]
DraftModel = Annotated[Optional[str], typer.Option("--draft-model", help="A much smaller model with the same "
                       "tokenizer (store name or .gguf path) that proposes tokens for this one to verify.",
                       rich_help_panel=_M)]
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
    format: str | None = None  # output format flags: what they name, read by `apply`
    json_schema: str | None = None  # a file
    regex: str | None = None
    grammar: str | None = None  # a file

    def apply(self, defaults: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == [] or (f.name == "ignore_eos" and not value):
                continue
            if f.name == "format":
                if value != "json":
                    raise InvalidParameterError("--format", f"the one format is 'json', got {value!r}")
                changes["response_format"] = "json_object"
            elif f.name in ("json_schema", "grammar"):
                changes[f.name] = _read_file(f"--{f.name.replace('_', '-')}", value)
            else:
                changes[f.name] = parse_logit_bias(value) if f.name == "logit_bias" else value
        if (self.num_beams or 1) > 1 and self.temperature is None:
            # Beam search scores by log-probability: a model's default temperature (a manifest's
            # 0.2) means nothing to it, and refusing it would blame a flag the user never gave.
            changes["temperature"] = 0.0
        return defaults.updated(**changes)


def _read_file(flag: str, path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError(flag, f"cannot read {path}: {exc.strerror or exc}") from None


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
