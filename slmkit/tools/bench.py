"""`slm bench`: latency and throughput of a model at several concurrency levels.

Two targets, measured the same way (per request: submitted, first token, finished, token counts):

- a local model, through the batching engine on its own thread (`EngineLoop`), so ``c``
  concurrent requests really share each forward; prompts are exactly N tokens, built from the
  model's tokenizer, no prefix cache, greedy with ``ignore_eos`` so every request decodes
  exactly ``max_tokens`` tokens;
- a running server's URL (``slm serve``, llama-server, vLLM, Ollama: anything speaking the
  OpenAI streaming API), with httpx; prompt lengths are approximate there and token counts come
  from the usage chunk (``stream_options.include_usage``).

Per level: mean and worst time to first token, prefill tokens/s (all prompt tokens over the
time until the last first token), decode tokens/s of one stream, aggregate throughput (all
completion tokens over the level's wall time), and this process's RSS (local only).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Callable, Sequence

import httpx

from slmkit.errors import InvalidParameterError, ProviderError, SlmkitError
from slmkit.types import RequestOutput, SamplingParams

DEFAULT_CONCURRENCY = (1, 4, 8)


@dataclass
class RequestTiming:
    submitted: float
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ttft(self) -> float:
        return (self.first_token or self.finished or self.submitted) - self.submitted

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens after the first over the time after it: the speed one stream sees."""
        if self.first_token is None or self.finished is None or self.completion_tokens < 2:
            return None
        elapsed = self.finished - self.first_token
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    prompt_tokens: int  # all requests together
    completion_tokens: int
    ttft_seconds: float  # mean
    ttft_max_seconds: float
    prefill_tokens_per_second: float
    decode_tokens_per_second: float | None  # mean over requests, per stream
    throughput_tokens_per_second: float  # completion tokens of all requests / wall time
    wall_seconds: float
    rss_mb: float | None  # this process after the level (local models only)
    peak_rss_mb: float | None

    @classmethod
    def from_timings(cls, concurrency: int, timings: Sequence[RequestTiming],
                     rss: tuple[float, float] | None) -> "LevelResult":
        start = min(t.submitted for t in timings)
        end = max(t.finished or t.submitted for t in timings)
        last_first = max(t.first_token or t.finished or start for t in timings)
        prompt = sum(t.prompt_tokens for t in timings)
        completion = sum(t.completion_tokens for t in timings)
        decode = [r for r in (t.decode_tokens_per_second for t in timings) if r is not None]
        return cls(
            concurrency=concurrency, requests=len(timings), prompt_tokens=prompt, completion_tokens=completion,
            ttft_seconds=sum(t.ttft for t in timings) / len(timings), ttft_max_seconds=max(t.ttft for t in timings),
            prefill_tokens_per_second=prompt / max(last_first - start, 1e-9),
            decode_tokens_per_second=sum(decode) / len(decode) if decode else None,
            throughput_tokens_per_second=completion / max(end - start, 1e-9), wall_seconds=end - start,
            rss_mb=rss[0] if rss else None, peak_rss_mb=rss[1] if rss else None,
        )


@dataclass
class BenchReport:
    target: str  # the model name, or the server URL
    model: str
    kind: str  # "local" or "url"
    prompt_tokens: int  # asked per request (exact locally, approximate over HTTP)
    max_tokens: int
    levels: list[LevelResult] = field(default_factory=list)
    threads: int | None = None
    load_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_concurrency(text: str) -> list[int]:
    """``"1,4,8"`` -> ``[1, 4, 8]``."""
    try:
        levels = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InvalidParameterError("concurrency", f"expected numbers like 1,4,8, got {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise InvalidParameterError("concurrency", f"expected positive numbers like 1,4,8, got {text!r}")
    return levels


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def process_rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource  # macOS: ru_maxrss is in bytes there

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)
        return peak, peak


def bundled_text() -> str:
    from slmkit.tools.evaluate import load_task_data

    return "\n\n".join(doc["text"] for doc in load_task_data("perplexity"))


def exact_prompt(tokenizer, length: int, variant: int) -> list[int]:
    """`length` token ids of real text (BOS first if the model wants it); `variant` starts the
    text elsewhere, so concurrent requests share no prefix."""
    body = tokenizer.encode(bundled_text(), add_special=False, parse_special=False)
    start = (variant * 97) % len(body)
    bos = [tokenizer.special.bos] if tokenizer.special.add_bos and tokenizer.special.bos is not None else []
    need = length - len(bos)
    ids = (body[start:] + body) * (need // len(body) + 1)
    return bos + ids[:need]


# -- a local model through the batching engine --------------------------------------------
def bench_local(model: str, concurrency: Sequence[int], *, prompt_tokens: int, max_tokens: int,
                threads: int | None = None, on_level: Callable[[LevelResult], None] | None = None) -> BenchReport:
    from slmkit.backends.llamacpp import LlamaCppModel
    from slmkit.engine.async_engine import EngineLoop
    from slmkit.engine.engine import Engine, Request
    from slmkit.store.store import ModelStore

    _check_sizes(concurrency, prompt_tokens, max_tokens)
    started = time.perf_counter()
    resolved = ModelStore().resolve(model)
    llama = LlamaCppModel(resolved.path)
    runner = llama.create_runner(context_length=max(prompt_tokens + max_tokens + 1, 64),
                                 max_sequences=max(concurrency), threads=threads, unified_kv=False)
    loop = EngineLoop(Engine(runner, llama.tokenizer, prefix_caching=False), name="slmkit-bench")
    report = BenchReport(model, resolved.name, "local", prompt_tokens, max_tokens, threads=runner.threads,
                         load_seconds=time.perf_counter() - started)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    variant = 0

    def run_level(c: int, params: SamplingParams, length: int) -> list[RequestTiming]:
        nonlocal variant
        done = threading.Semaphore(0)
        timings, errors = [], []
        for _ in range(c):
            timing = RequestTiming(time.perf_counter())
            timings.append(timing)
            loop.submit(Request(exact_prompt(llama.tokenizer, length, variant), params),
                        _recorder(timing, done, errors))
            variant += 1
        for _ in range(c):
            done.acquire()
        if errors:
            raise errors[0]
        return timings

    try:
        run_level(1, params.updated(max_tokens=2), min(prompt_tokens, 16))  # warm up: first-call costs
        for c in concurrency:
            level = LevelResult.from_timings(c, run_level(c, params, prompt_tokens), process_rss_mb())
            report.levels.append(level)
            if on_level:
                on_level(level)
    finally:
        loop.stop(drain=False, timeout=30)
        runner.close()
        llama.close()
    return report


def _recorder(timing: RequestTiming, done: threading.Semaphore, errors: list[Exception]):
    def emit(out: RequestOutput) -> None:  # runs on the engine thread, right as tokens appear
        now = time.perf_counter()
        if out.token_ids and timing.first_token is None:
            timing.first_token = now
        if out.finished:
            timing.finished = now
            timing.prompt_tokens = out.usage.prompt_tokens
            timing.completion_tokens = out.usage.completion_tokens
            if out.error is not None:
                errors.append(out.error)
            done.release()
    return emit


# -- a server over the OpenAI streaming API -----------------------------------------------
def bench_url(url: str, concurrency: Sequence[int], *, model: str | None, prompt_tokens: int, max_tokens: int,
              api_key: str | None = None, ignore_eos: bool = True, timeout: float = 600,
              on_level: Callable[[LevelResult], None] | None = None) -> BenchReport:
    _check_sizes(concurrency, prompt_tokens, max_tokens)
    base = openai_base_url(url)
    key = api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return asyncio.run(_bench_url(base, concurrency, model, prompt_tokens, max_tokens, headers, ignore_eos,
                                  timeout, on_level, url))


def openai_base_url(url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1`` -> ``http://host:8000/v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


async def _bench_url(base, concurrency, model, prompt_tokens, max_tokens, headers, ignore_eos, timeout,
                     on_level, url) -> BenchReport:
    limits = httpx.Limits(max_connections=max(concurrency) + 1, max_keepalive_connections=max(concurrency) + 1)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
        model = model or await _first_model(client, base)
        report = BenchReport(url, model, "url", prompt_tokens, max_tokens)
        words = bundled_text().split()
        variant = 0

        async def run_level(c: int, tokens: int, length: int) -> list[RequestTiming]:
            nonlocal variant
            prompts = [_approximate_prompt(words, length, variant + i) for i in range(c)]
            variant += c
            return list(await asyncio.gather(*[
                _stream_one(client, base, model, p, tokens, ignore_eos) for p in prompts]))

        await run_level(1, 2, 16)  # warm up; also loads a lazily loaded model
        for c in concurrency:
            level = LevelResult.from_timings(c, await run_level(c, max_tokens, prompt_tokens), None)
            report.levels.append(level)
            if on_level:
                on_level(level)
        return report


def _approximate_prompt(words: list[str], tokens: int, variant: int) -> str:
    """About `tokens` tokens of English (~0.75 words a token), starting with a number of its own
    so concurrent prompts share no prefix."""
    count = max(1, int(tokens * 0.75))
    start = (variant * 53) % len(words)
    picked = ((words[start:] + words) * (count // len(words) + 1))[:count]
    return f"{variant}. " + " ".join(picked)


async def _first_model(client: httpx.AsyncClient, base: str) -> str:
    response = await client.get(f"{base}/models")
    _raise_for_status(response, base)
    models = [m.get("id") for m in response.json().get("data", []) if m.get("id")]
    if not models:
        raise InvalidParameterError("model", f"{base} lists no models; name one with --model")
    return models[0]


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of an OpenAI-style server-sent-events body, up to ``data: [DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


async def _stream_one(client: httpx.AsyncClient, base: str, model: str, prompt: str, max_tokens: int,
                      ignore_eos: bool) -> RequestTiming:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": max_tokens, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True  # llama-server, vLLM and slm serve honour it: fixed decode length
    timing = RequestTiming(time.perf_counter())
    pieces = 0
    usage = None
    async with client.stream("POST", f"{base}/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            _raise_for_status(response, base)
        async for chunk in sse_events(response):
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    timing.first_token = timing.first_token or time.perf_counter()
                    pieces += 1
    timing.finished = time.perf_counter()
    # Without a usage chunk, content chunks stand in for tokens (one each on most servers).
    timing.prompt_tokens = int(usage["prompt_tokens"]) if usage else int(len(prompt.split()) / 0.75)
    timing.completion_tokens = int(usage["completion_tokens"]) if usage else pieces
    return timing


def _raise_for_status(response: httpx.Response, base: str) -> None:
    if response.status_code == 200:
        return
    try:
        detail = response.json().get("error", response.text)
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
    except (ValueError, AttributeError):
        detail = response.text
    raise ProviderError(f"{base} answered {response.status_code}: {str(detail)[:300]}", provider="openai",
                        upstream_status=response.status_code)


def _check_sizes(concurrency: Sequence[int], prompt_tokens: int, max_tokens: int) -> None:
    if not concurrency:
        raise InvalidParameterError("concurrency", "give at least one level, e.g. 1,4,8")
    if prompt_tokens < 2:
        raise InvalidParameterError("prompt_tokens", "must be >= 2")
    if max_tokens < 1:
        raise InvalidParameterError("max_tokens", "must be >= 1")


# -- a picture --------------------------------------------------------------------------
def plot(report: BenchReport, path: str) -> None:
    """Four panels against concurrency: TTFT, prefill, per-stream decode, aggregate throughput."""
    try:
        import matplotlib
    except ImportError as exc:
        raise SlmkitError("--plot needs matplotlib: pip install 'slmkit[tools]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [lv.concurrency for lv in report.levels]
    panels = [
        ("time to first token (s)", [lv.ttft_seconds for lv in report.levels]),
        ("prefill tokens/s", [lv.prefill_tokens_per_second for lv in report.levels]),
        ("decode tokens/s per stream", [lv.decode_tokens_per_second or 0 for lv in report.levels]),
        ("aggregate tokens/s", [lv.throughput_tokens_per_second for lv in report.levels]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    for ax, (title, values) in zip(axes.flat, panels):
        ax.plot(x, values, marker="o")
        ax.set_title(title)
        ax.set_xlabel("concurrent requests")
        ax.set_xticks(x)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report.model} ({report.kind}): {report.prompt_tokens}-token prompts, "
                 f"{report.max_tokens} new tokens")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
