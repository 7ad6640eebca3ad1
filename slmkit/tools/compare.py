"""`slm compare`: several models answer the same prompts at the same time, side by side.

Each model runs on a thread of its own: a local model is its own `LLM` (its own llama.cpp
context; the CPU cores are split between the local models), a provider model string
(``openai:...``, ``ollama:...``, ``github:...``) a `RemoteLLM`. The caller sees one `ModelRun`
per model, filled in as tokens stream, and renders it however it likes (a rich Live view,
JSON, Markdown).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from slmkit.errors import InvalidParameterError, SlmkitError
from slmkit.types import Message, SamplingParams


@dataclass
class ModelRun:
    """One model's answer to one prompt, as it streams; times are ``perf_counter`` seconds."""

    model: str
    started: float = 0.0
    text: str = ""
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first over the time after it."""
        if self.first_token is None or self.completion_tokens < 2:
            return None
        elapsed = (self.finished or time.perf_counter()) - self.first_token
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "text": self.text, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "ttft_seconds": self.ttft, "tokens_per_second": self.tokens_per_second,
                "seconds": self.seconds, "error": self.error}


@dataclass
class PromptResult:
    messages: list[Message]
    runs: list[ModelRun] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        return self.messages[-1].content

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "messages": [m.to_dict() for m in self.messages],
                "results": [r.to_dict() for r in self.runs]}


def load_prompts(path: str | Path) -> list[list[Message]]:
    """A JSONL file: each line ``{"prompt": "..."}``, ``{"messages": [...]}`` or a JSON string."""
    conversations = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidParameterError("prompts", f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterError("prompts", f"cannot read {path}: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidParameterError("prompts", f"{path}:{number} is not JSON ({exc.msg})") from None
        if isinstance(item, str):
            item = {"prompt": item}
        if isinstance(item, dict) and isinstance(item.get("prompt"), str):
            conversations.append([Message("user", item["prompt"])])
        elif isinstance(item, dict) and isinstance(item.get("messages"), list) and item["messages"]:
            conversations.append([Message.coerce(m) for m in item["messages"]])
        else:
            raise InvalidParameterError("prompts", f'{path}:{number}: expected {{"prompt": "..."}} or '
                                        '{"messages": [...]}')
    if not conversations:
        raise InvalidParameterError("prompts", f"{path} holds no prompts")
    return conversations


class Comparison:
    """Loaded models and the sampling parameters each uses; `run` asks them all one prompt."""

    def __init__(self, models: Sequence[str], params_for: Callable[[Any], SamplingParams] | None = None, *,
                 threads: int | None = None, context_length: int | None = None, trust_remote_code: bool = False):
        from slmkit.backends.llamacpp import default_threads
        from slmkit.llm import LLM
        from slmkit.providers.registry import parse_model_string

        if not models:
            raise InvalidParameterError("models", "name at least one model")
        local = [m for m in models if parse_model_string(m) is None]
        # Local models decode at once: share the cores instead of oversubscribing them.
        per_model = threads or max(1, default_threads() // max(1, len(local)))
        self.llms = []
        try:
            for model in models:
                if parse_model_string(model) is None:
                    self.llms.append(LLM(model, threads=per_model, context_length=context_length,
                                         trust_remote_code=trust_remote_code))
                else:
                    self.llms.append(LLM(model))
        except BaseException:
            self.close()
            raise
        self.names = list(models)  # as the user wrote them: "smollm2", not "smollm2:original"
        self.params = [params_for(llm) if params_for else llm.default_params for llm in self.llms]


    def run(self, messages: Sequence[Message], on_tick: Callable[[list[ModelRun]], None] | None = None,
            tick_seconds: float = 0.1) -> PromptResult:
        """All models answer `messages` concurrently; `on_tick(runs)` is called every
        `tick_seconds` from this thread while they stream, and once at the end."""
        result = PromptResult(list(messages), [ModelRun(name) for name in self.names])
        workers = [threading.Thread(target=_answer, args=(llm, result.messages, params, run), daemon=True)
                   for llm, params, run in zip(self.llms, self.params, result.runs)]
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            if on_tick:
                on_tick(result.runs)
            for worker in workers:
                worker.join(tick_seconds / len(workers))
        if on_tick:
            on_tick(result.runs)
        return result

    def close(self) -> None:
        for llm in self.llms:
            llm.close()


def _answer(llm, messages: list[Message], params: SamplingParams, run: ModelRun) -> None:
    run.started = time.perf_counter()
    counted = 0
    try:
        for delta in llm.chat(messages, params, stream=True):
            if (delta.text or delta.token_ids) and run.first_token is None:
                run.first_token = time.perf_counter()
            run.text += delta.text
            counted += len(delta.token_ids)
            # Remote deltas carry no token ids: until the usage at the end, text pieces stand in.
            run.completion_tokens = counted or run.completion_tokens + bool(delta.text)
            if delta.finished:
                run.finish_reason = delta.finish_reason
                if delta.usage.completion_tokens or delta.usage.prompt_tokens:
                    run.prompt_tokens = delta.usage.prompt_tokens
                    run.completion_tokens = delta.usage.completion_tokens
                if delta.error is not None:
                    run.error = str(delta.error)
    except SlmkitError as exc:
        run.error = exc.message
    except Exception as exc:  # noqa: BLE001 - one model failing must not hide the others' answers
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        run.finished = time.perf_counter()


def to_markdown(results: Sequence[PromptResult]) -> str:
    """A report: per prompt, a table of the numbers and each model's answer."""
    out = []
    for number, result in enumerate(results, 1):
        out += [f"## Prompt {number}", "", *[f"> {line}" for line in result.prompt.splitlines()], "",
                "| model | TTFT (s) | tokens/s | prompt tokens | completion tokens | finish |",
                "|---|---:|---:|---:|---:|---|"]
        for run in result.runs:
            out.append(f"| {run.model} | {_num(run.ttft, 3)} | {_num(run.tokens_per_second, 1)} | "
                       f"{run.prompt_tokens} | {run.completion_tokens} | {run.error and 'error' or run.finish_reason} |")
        for run in result.runs:
            answer = f"error: {run.error}" if run.error else run.text.strip() or "(empty)"
            out += ["", f"**{run.model}**", "", *[f"> {line}" if line else ">" for line in answer.splitlines()]]
        out.append("")
    return "\n".join(out)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
