"""Our OpenAI server (`slm serve`) vs llama.cpp's `llama-server`, on the same GGUF, in one run.

Both servers get the same file, 2 threads and 8 slots of 2048 tokens; ours also runs with one slot
(`--parallel 1`) as the serialized baseline. Each server runs as a subprocess on 127.0.0.1; after a
warm-up wave, waves of 1, 4, 8 and 16 concurrent streaming `/v1/completions` requests (each with
its own never-seen prompt of 100–200 tokens, greedy, `max_tokens` 128, `ignore_eos`) measure
aggregate generated tokens/s, time to first token and the server's peak RSS. A prefix-cache probe
then sends a fresh ~1000-token prefix (cold) and the same prefix with another short suffix (warm).
Every repetition starts each server afresh, in alternating order (A, B, C, C, B, A, ...); medians
are reported. Every request must return exactly 128 tokens (exit code 1 otherwise). Writes the
`serve` section of BENCHMARKS.md. llama-server comes from `make llama-server`.

    .venv/bin/python benchmarks/serve.py [--model PATH] [--variants] [--reps 3] [--skip-ours]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quiet import FOREIGN_CPU_LIMIT, ForeignCpu, quiet_section, tree_pids, wait_until_quiet  # noqa: E402,F401
from _report import cpu_model, median, today, write_section  # noqa: E402

from slmkit.backends.llamacpp import LlamaCppModel
from slmkit.errors import ModelNotFoundError, SlmkitError
from slmkit.store.bundled import locate_smollm2
from slmkit.store.store import ModelStore
from slmkit.tools.bench import sse_events

ROOT = Path(__file__).resolve().parents[1]
SLM = ROOT / ".venv" / "bin" / "slm"
LLAMA_SERVER = (Path.home() / ".cache" / "slmkit" / f"llama-server-{version('llama-cpp-python')}"
                / "build" / "bin" / "llama-server")
THREADS = 2
SLOTS = 8
CONTEXT_PER_SLOT = 2048
MAX_TOKENS = 128
CONCURRENCY = (1, 4, 8, 16)
PROMPT_TOKENS = (100, 190)
PREFIX_TOKENS = 1000
PREFIX_GOAL = 0.2  # warm TTFT / cold TTFT
VARIANT_CONCURRENCY = 8
SERVERS = {
    "ours": "ours (8 slots)",
    "llama": "llama-server (8 slots)",
    "serial": "ours serialized (1 slot)",
}

SENTENCES = [
    "The lighthouse keeper logged the passing ships in a leather notebook every evening.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "A good sourdough starter needs flour, water, patience and a warm kitchen.",
    "The committee postponed the vote on the new bridge until the spring session.",
    "Glaciers carve U-shaped valleys as they grind slowly over the bedrock.",
    "Her grandmother taught her to knit during the long winters in the mountains.",
    "Compilers translate source code into machine instructions the processor can run.",
    "The orchestra tuned to the oboe's A before the conductor raised the baton.",
    "Honeybees communicate the direction of flowers with a waggle dance.",
    "Interest rates rose for the third time this year, cooling the housing market.",
    "The expedition crossed the desert at night to avoid the heat of the sun.",
    "A prime number has exactly two divisors: one and itself.",
    "The museum's new wing displays textiles from twelve centuries of weaving.",
    "Tides are caused mainly by the gravitational pull of the moon on the oceans.",
    "The referee stopped the match when the fog rolled in over the stadium.",
    "Volunteers planted four hundred oak saplings along the river bank on Saturday.",
    "In chess, controlling the center early gives the pieces more room to move.",
    "The recipe calls for two cups of rice, a pinch of saffron and fresh peas.",
    "Satellites in geostationary orbit stay above the same point on the equator.",
    "The novel follows three sisters who inherit a failing vineyard in the valley.",
    "Vaccines train the immune system to recognize a pathogen before infection.",
    "The old railway station was converted into a library with a rooftop garden.",
    "Wind turbines produce more energy at night, when the coastal breeze is steady.",
    "A hash table trades memory for fast lookups by key.",
    "The painter mixed ultramarine and burnt sienna to get a deep shadow color.",
    "Migrating cranes rest in the wetlands for a few days each autumn.",
    "The startup shipped its first product after eighteen months of prototypes.",
    "Earthquakes release stress that builds up where tectonic plates meet.",
    "The choir rehearsed the cantata twice a week for the holiday concert.",
    "Coffee beans are roasted at temperatures above two hundred degrees Celsius.",
    "The town council approved a plan to add bicycle lanes to the main avenue.",
    "Octopuses can change the color and texture of their skin in an instant.",
    "A balanced diet includes vegetables, whole grains, legumes and some fruit.",
    "The telescope revealed faint rings around the distant gas giant.",
    "Children at the school learn to code by programming small robots.",
    "The ferry to the island runs every two hours during the summer season.",
    "Medieval scribes copied manuscripts by hand in cold monastery rooms.",
    "The team rewrote the database layer to cut query latency in half.",
    "Rainforests hold more than half of the animal and plant species on land.",
    "The jazz trio improvised for an hour on a single melody by the pianist.",
    "Solar panels convert photons into electric current through silicon cells.",
    "The hikers reached the summit just as the clouds parted over the lake.",
    "Economists disagree about how quickly inflation will return to target.",
    "The baker shapes the croissants the night before and bakes them at dawn.",
    "Some spiders spin a new web every morning and eat the old one.",
    "The engineers tested the bridge by driving loaded trucks across it.",
    "Ancient sailors navigated by the stars and the color of the sea.",
    "The festival closed with fireworks reflected in the harbor water.",
]
QUESTIONS = [
    "Summarize the passage above in one sentence.",
    "Which detail in the text above is the most surprising, and why?",
    "List three topics mentioned in the passage above.",
    "Write a short title for the text above.",
    "What would be a good follow-up question about the passage above?",
    "Explain the second sentence of the text above to a child.",
]


# -- prompts ---------------------------------------------------------------------------------
class PromptMaker:
    """Deterministic, varied prompts of a target token length; each starts with a unique tag so no
    server can reuse a cached prefix from another prompt."""

    def __init__(self, model_path: Path):
        self.model = LlamaCppModel(model_path, vocab_only=True)  # owns the tokenizer's vocabulary
        self.tokenizer = self.model.tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special=False))

    def text(self, tag: str, min_tokens: int, rng: random.Random) -> str:
        parts = [f"Record {tag}."]
        pool: list[str] = []
        while self.count(" ".join(parts)) < min_tokens:
            if not pool:
                pool = SENTENCES[:]
                rng.shuffle(pool)
            parts.append(pool.pop())
        return " ".join(parts)

    def wave(self, name: str, n: int) -> list[str]:
        prompts = []
        for i in range(n):
            rng = random.Random(f"{name}-{i}")
            prompts.append(self.text(f"{name}-{i}", rng.randint(*PROMPT_TOKENS), rng))
        return prompts

    def prefix_pair(self, name: str) -> tuple[str, str]:
        """(cold, warm): the same ~1000-token prefix with two different ~20-token questions."""
        rng = random.Random(name)
        prefix = self.text(name, PREFIX_TOKENS, rng)
        first, second = rng.sample(QUESTIONS, 2)
        return f"{prefix}\n\nQuestion: {first}\nAnswer:", f"{prefix}\n\nQuestion: {second}\nAnswer:"


# -- server processes ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(kind: str, model: Path, port: int, llama_server: Path) -> list[str]:
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "llama":
        return [str(llama_server), "-m", str(model), *common, "-t", str(THREADS), "-tb", str(THREADS),
                "-np", str(SLOTS), "-c", str(SLOTS * CONTEXT_PER_SLOT), "--no-webui", "-fa", "auto"]
    parallel = 1 if kind == "serial" else SLOTS
    return [str(SLM), "serve", "--model", str(model), *common, "--parallel", str(parallel),
            "--context-length", str(CONTEXT_PER_SLOT), "--threads", str(THREADS)]


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of a process and all its descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


class RssMonitor:
    """Polls the server's RSS every 50 ms in a thread; `peak` is the highest since `reset()`."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))

    def reset(self) -> None:
        self.peak = tree_rss_bytes(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ServerProcess:
    """One server subprocess: started, healthy, measured, stopped; its output goes to a log file."""

    def __init__(self, kind: str, command: list[str], port: int, model: Path):
        self.kind, self.command, self.model = kind, command, model
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = Path(tempfile.gettempdir()) / f"slmkit-bench-serve-{kind}.log"
        self.model_id = "default"

    def __enter__(self) -> ServerProcess:
        # llama-server finds its .so files next to itself: run it by full path from its folder.
        cwd = Path(self.command[0]).parent if self.kind == "llama" else ROOT
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(self.command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_healthy(timeout=180)
        except BaseException:
            self._stop()
            raise
        self.rss = RssMonitor(self.proc.pid)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{shlex.join(self.command)} exited with code {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    self._read_model_id()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def _read_model_id(self) -> None:
        """The id the server lists for our file (ours: its stem; llama-server: the path)."""
        try:
            ids = [m["id"] for m in httpx.get(self.base_url + "/v1/models", timeout=5).json()["data"]]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return  # keep the placeholder: a server that needs the id will say so in its errors
        named = [i for i in ids if i in (self.model.stem, self.model.name, str(self.model))]
        self.model_id = (named or ids or [self.model_id])[0]

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.rss.stop()
        self._stop()


# -- requests --------------------------------------------------------------------------------
@dataclass
class Reply:
    ttft: float | None = None  # seconds from sending to the first non-empty text
    completion_tokens: int | None = None  # from the usage chunk, when sent
    prompt_tokens: int | None = None
    chunks: int = 0  # streamed chunks carrying a choice
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks


async def stream_completion(client: httpx.AsyncClient, server: ServerProcess, prompt: str,
                            max_tokens: int) -> Reply:
    body = {"model": server.model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    reply = Reply()
    started = time.perf_counter()
    try:
        async with client.stream("POST", server.base_url + "/v1/completions", json=body) as response:
            if response.status_code != 200:
                reply.error = f"HTTP {response.status_code}: {(await response.aread()).decode()[:300]}"
                return reply
            async for event in sse_events(response):
                if "error" in event:
                    reply.error = f"stream error: {json.dumps(event['error'])[:300]}"
                    return reply
                if event.get("choices"):
                    reply.chunks += 1
                    if reply.ttft is None and event["choices"][0].get("text"):
                        reply.ttft = time.perf_counter() - started
                if event.get("usage"):
                    reply.completion_tokens = event["usage"].get("completion_tokens")
                    reply.prompt_tokens = event["usage"].get("prompt_tokens")
    except (httpx.HTTPError, ValueError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    return reply


async def _wave(server: ServerProcess, prompts: list[str], max_tokens: int) -> tuple[list[Reply], float]:
    timeout = httpx.Timeout(900, connect=10)
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=64)) as client:
        started = time.perf_counter()
        replies = await asyncio.gather(*(stream_completion(client, server, p, max_tokens) for p in prompts))
        return list(replies), time.perf_counter() - started


def run_wave(server: ServerProcess, prompts: list[str], max_tokens: int) -> tuple[list[Reply], float]:
    return asyncio.run(_wave(server, prompts, max_tokens))


# -- measurements ----------------------------------------------------------------------------
@dataclass
class Wave:
    tokens_per_second: float
    ttfts: list[float]
    peak_rss: int
    prompt_tokens: list[int]


@dataclass
class Series:
    """Everything measured for one (server, model): waves per concurrency and prefix probes."""

    waves: dict[int, dict[int, Wave]] = field(default_factory=dict)  # concurrency -> rep -> wave
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    idle_rss: list[int] = field(default_factory=list)
    foreign_cpu: list[float] = field(default_factory=list)  # per session, share of all cores

    def rate(self, c: int) -> float | None:
        waves = self.waves.get(c, {}).values()
        return median([w.tokens_per_second for w in waves]) if waves else None

    def ttft(self, c: int, q: float) -> float | None:
        pooled = [t for w in self.waves.get(c, {}).values() for t in w.ttfts]
        return float(np.percentile(pooled, q)) if pooled else None

    def rss_mb(self, c: int) -> float | None:
        waves = self.waves.get(c, {}).values()
        return median([w.peak_rss for w in waves]) / 1e6 if waves else None


def check(replies: list[Reply], max_tokens: int, what: str, problems: list[str]) -> None:
    errors = [r.error for r in replies if r.error]
    wrong = [r.tokens for r in replies if not r.error and r.tokens != max_tokens]
    no_text = sum(1 for r in replies if not r.error and r.ttft is None)
    if errors:
        problems.append(f"{what}: {len(errors)} of {len(replies)} requests failed, first: {errors[0]}")
    if wrong:
        problems.append(f"{what}: {len(wrong)} of {len(replies)} requests returned {sorted(set(wrong))} "
                        f"tokens instead of {max_tokens}")
    if no_text:
        problems.append(f"{what}: {no_text} of {len(replies)} requests streamed no text")


def guarded(measure, server: ServerProcess, what: str, series: Series, args: argparse.Namespace,
            console: Console):
    """``measure(attempt)``, run again (after the machine settles) while other processes took more
    than FOREIGN_CPU_LIMIT of the CPU during it, at most ``args.retries`` times."""
    for attempt in range(args.retries + 1):
        foreign = ForeignCpu(server.proc.pid)
        result = measure(attempt)
        share = foreign.share()
        if share <= FOREIGN_CPU_LIMIT or attempt == args.retries:
            series.foreign_cpu.append(share)
            if share > FOREIGN_CPU_LIMIT:
                console.print(f"  [yellow]{what}: other processes used {share:.0%} of the CPU; "
                              "kept[/yellow]")
            return result
        console.print(f"  [yellow]{what}: other processes used {share:.0%} of the CPU; again[/yellow]")
        wait_until_quiet(console, args.max_wait, server.proc.pid)


def run_session(kind: str, model: Path, concurrencies: tuple[int, ...], prefix_trials: int,
                rep: int, series: Series, prompts: PromptMaker, args: argparse.Namespace,
                console: Console, problems: list[str]) -> None:
    wait_until_quiet(console, args.max_wait)
    port = free_port()
    tag = f"{SERVERS[kind]}, {model.name}, rep {rep + 1}"
    with ServerProcess(kind, server_command(kind, model, port, args.llama_server), port, model) as server:
        series.idle_rss.append(tree_rss_bytes(server.proc.pid))
        replies, _ = run_wave(server, prompts.wave("warmup", SLOTS), 16)
        check(replies, 16, f"{tag} warm-up", problems)

        def wave_at(c: int):
            def measure(attempt: int) -> tuple[list[Reply], float, int]:
                # Attempt 0 sends the same prompts to every server (each process starts with an
                # empty cache); a repeat needs new ones, or it would hit the prefix cache.
                server.rss.reset()
                replies, wall = run_wave(server, prompts.wave(f"c{c}-{attempt}", c), MAX_TOKENS)
                return replies, wall, server.rss.peak
            return measure

        for c in concurrencies:
            replies, wall, peak = guarded(wave_at(c), server, f"{tag} c={c}", series, args, console)
            check(replies, MAX_TOKENS, f"{tag} c={c}", problems)
            ok = [r for r in replies if not r.error]
            wave = Wave(sum(r.tokens for r in ok) / wall, [r.ttft for r in ok if r.ttft is not None],
                        peak, [r.prompt_tokens for r in ok if r.prompt_tokens])
            series.waves.setdefault(c, {})[rep] = wave
            console.print(f"  {tag} c={c:>2}: {wave.tokens_per_second:6.1f} tok/s, TTFT p50 "
                          f"{np.median(wave.ttfts) if wave.ttfts else float('nan'):.3f} s, "
                          f"peak RSS {wave.peak_rss / 1e6:.0f} MB")

        def prefix_probe(trial: int):
            def measure(attempt: int) -> tuple[Reply, Reply]:
                cold_prompt, warm_prompt = prompts.prefix_pair(f"prefix-{rep}-{trial}-{attempt}")
                (cold,), _ = run_wave(server, [cold_prompt], 4)
                (warm,), _ = run_wave(server, [warm_prompt], 4)
                return cold, warm
            return measure

        for trial in range(prefix_trials):
            what = f"{tag} prefix trial {trial + 1}"
            cold, warm = guarded(prefix_probe(trial), server, what, series, args, console)
            check([cold, warm], 4, what, problems)
            if cold.ttft is not None and warm.ttft is not None:
                series.cold.append(cold.ttft)
                series.warm.append(warm.ttft)
                console.print(f"  {tag} prefix ({cold.prompt_tokens} tokens): cold {cold.ttft:.3f} s, "
                              f"warm {warm.ttft:.3f} s")


# -- reporting -------------------------------------------------------------------------------
def paired_ratio(a: Series | None, b: Series | None, c: int) -> str:
    """Median of per-repetition ratios a/b (each pair ran in the same repetition), with range."""
    a_waves, b_waves = (a.waves.get(c, {}) if a else {}), (b.waves.get(c, {}) if b else {})
    ratios = [a_waves[r].tokens_per_second / b_waves[r].tokens_per_second
              for r in a_waves if r in b_waves and b_waves[r].tokens_per_second]
    if not ratios:
        return "—"
    return f"{median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else format(value, spec) + unit


THROUGHPUT_COLUMNS = ["concurrent", "ours tok/s", "llama-server tok/s", "ours/llama-server",
                      "ours 1-slot tok/s", "ours/1-slot"]
LATENCY_COLUMNS = ["concurrent", "TTFT p50 ours", "TTFT p50 llama-server", "TTFT p50 ours 1-slot",
                   "TTFT p95 ours", "TTFT p95 llama-server", "TTFT p95 ours 1-slot",
                   "peak RSS ours", "peak RSS llama-server", "peak RSS ours 1-slot"]


def throughput_rows(res: dict[str, Series]) -> list[list[str]]:
    ours, llama, serial = res.get("ours"), res.get("llama"), res.get("serial")
    return [[str(c), fmt(ours and ours.rate(c), ".1f"), fmt(llama and llama.rate(c), ".1f"),
             paired_ratio(ours, llama, c), fmt(serial and serial.rate(c), ".1f"),
             paired_ratio(ours, serial, c)] for c in CONCURRENCY]


def latency_rows(res: dict[str, Series]) -> list[list[str]]:
    order = [res.get(k) for k in ("ours", "llama", "serial")]
    rows = []
    for c in CONCURRENCY:
        rows.append([str(c), *[fmt(s and s.ttft(c, q), ".3f", " s") for q in (50, 95) for s in order],
                     *[fmt(s and s.rss_mb(c), ".0f", " MB") for s in order]])
    return rows


PREFIX_COLUMNS = ["server", "prefix tokens", "trials", "cold TTFT", "warm TTFT", "warm/cold",
                  f"goal ≤ {PREFIX_GOAL}"]


def prefix_rows(res: dict[str, Series], prefix_tokens: int) -> list[list[str]]:
    rows = []
    for key in ("ours", "llama"):
        s = res.get(key)
        if s and s.cold:
            ratio = median(s.warm) / median(s.cold)
            rows.append([SERVERS[key], f"~{prefix_tokens}", str(len(s.cold)), f"{median(s.cold):.3f} s",
                         f"{median(s.warm):.3f} s", f"{ratio:.3f}",
                         "yes" if ratio <= PREFIX_GOAL else "**no**"])
    return rows


VARIANT_COLUMNS = ["server", f"Q4_1 tok/s @{VARIANT_CONCURRENCY}", f"Q8_0 tok/s @{VARIANT_CONCURRENCY}",
                   "Q8_0/Q4_1"]


def variant_rows(res: dict[str, Series], q8: dict[str, Series]) -> list[list[str]]:
    c = VARIANT_CONCURRENCY
    return [[SERVERS[k], fmt(res[k].rate(c), ".1f"), fmt(q8[k].rate(c), ".1f"),
             paired_ratio(q8[k], res[k], c)] for k in ("ours", "llama") if k in res and k in q8]


def md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1),
            *["| " + " | ".join(r) + " |" for r in rows]]


def foreign_cpu_note(res: dict[str, Series], q8: dict[str, Series], retries: int) -> str:
    shares = [x for s in [*res.values(), *q8.values()] for x in s.foreign_cpu]
    if not shares:
        return ""
    busy = sum(x > FOREIGN_CPU_LIMIT for x in shares)
    note = (f"Other processes on this shared machine used {median(shares):.0%} of its CPU during a "
            f"kept measurement (median; max {max(shares):.0%}); measurements above "
            f"{FOREIGN_CPU_LIMIT:.0%} are repeated up to {retries} times.")
    if busy:
        note += (f" {busy} of {len(shares)} measurements stayed above it: their numbers are less "
                 "reliable (llama.cpp's spinning threads slow down sharply when they lose a core).")
    return note


def markdown(res, q8, files, args, prompt_range, prefix_tokens, problems, skipped) -> str:
    command = shlex.join([".venv/bin/python", "benchmarks/serve.py", *sys.argv[1:]])
    reproduce = f"`{command}`" if sys.argv[1:] else f"`make bench` or `{command}`"
    model_text = "; ".join(f"`{path.name}` ({label}{path.stat().st_size / 1e6:.0f} MB)"
                           for label, path in zip(("", "`smollm2:q8_0`, "), files))
    lines = [
        f"## Serving{'' if args.section == 'serve' else ' ' + files[0].name}: `slm serve` vs llama.cpp "
        "`llama-server` (`benchmarks/serve.py`)",
        "",
        f"- Date: {today()}; CPU: {cpu_model()}; llama-cpp-python {version('llama-cpp-python')} "
        f"(llama-server built from its vendored llama.cpp by `make llama-server`)",
        f"- Model: {model_text}; threads {THREADS}; {SLOTS} slots × {CONTEXT_PER_SLOT} tokens of context "
        f"(llama-server `-np {SLOTS} -c {SLOTS * CONTEXT_PER_SLOT} -fa auto`; ours `--parallel {SLOTS} "
        f"--context-length {CONTEXT_PER_SLOT}`); serialized baseline: ours with `--parallel 1`",
        f"- Workload: N concurrent streaming `/v1/completions` requests, each with its own prompt "
        f"({prompt_range} tokens), greedy, `max_tokens` {MAX_TOKENS}, `ignore_eos`; every request "
        f"checked to return exactly {MAX_TOKENS} tokens. Warm-up wave after each server start.",
        f"- {args.reps} repetitions; each starts every server afresh, in alternating order. tok/s = "
        "all generated tokens / wall time of the wave, median over repetitions; ratios = median of "
        "per-repetition ratios (range in brackets); TTFT = send to first non-empty text, percentiles "
        "over all requests of all repetitions; peak RSS = server process tree during the wave "
        "(median over repetitions; waves run in order 1, 4, 8, 16 in one process).",
        f"- Reproduce: {reproduce}",
        "",
        *md_table(THROUGHPUT_COLUMNS, throughput_rows(res)),
        "",
        *md_table(LATENCY_COLUMNS, latency_rows(res)),
    ]
    if prefix_rows(res, prefix_tokens):
        lines += ["", f"Prefix cache: TTFT of a fresh ~{prefix_tokens}-token prompt (cold) vs the same "
                  "prefix with a different ~20-token question right after it (warm); medians.", "",
                  *md_table(PREFIX_COLUMNS, prefix_rows(res, prefix_tokens))]
    if q8:
        lines += ["", f"Q8_0 vs Q4_1 (`smollm2:q8_0`, requantized from the shipped Q4_1), "
                  f"{VARIANT_CONCURRENCY} concurrent requests, same repetitions:", "",
                  *md_table(VARIANT_COLUMNS, variant_rows(res, q8))]
    idle = [f"{SERVERS[k]} {median(s.idle_rss) / 1e6:.0f} MB" for k, s in res.items() if s.idle_rss]
    if idle:
        lines += ["", "RSS after loading, before the first request: " + "; ".join(idle) + "."]
    notes = [n for n in [foreign_cpu_note(res, q8, args.retries), *skipped, *problems] if n]
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


def print_tables(console: Console, res, q8, prefix_tokens) -> None:
    for title, columns, rows in [
        ("throughput", THROUGHPUT_COLUMNS, throughput_rows(res)),
        ("latency and memory", LATENCY_COLUMNS, latency_rows(res)),
        ("prefix cache", PREFIX_COLUMNS, prefix_rows(res, prefix_tokens)),
        ("Q8_0 vs Q4_1", VARIANT_COLUMNS, variant_rows(res, q8) if q8 else []),
    ]:
        if rows:
            table = Table(*columns, title=f"serve.py: {title}")
            for r in rows:
                table.add_row(*r)
            console.print(table)


# -- main ------------------------------------------------------------------------------------
def q8_file(console: Console) -> Path:
    """The store's `smollm2:q8_0`, made by `slm pull smollm2` when missing."""
    store = ModelStore()
    try:
        return store.resolve("smollm2:q8_0").path
    except ModelNotFoundError:
        console.print("making smollm2:q8_0 (as `slm pull smollm2` does) ...")
        store.pull("smollm2")
        return store.resolve("smollm2:q8_0").path


def main() -> int:
    global CONCURRENCY, MAX_TOKENS  # --concurrency / --max-tokens: the tables and checks read them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the bundled SmolLM2 Q4_1)")
    parser.add_argument("--variants", action="store_true",
                        help=f"also serve smollm2:q8_0 at {VARIANT_CONCURRENCY} concurrent requests "
                             "(bundled model only)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--prefix-trials", type=int, default=2,
                        help="prefix-cache trials per server start (default 2)")
    parser.add_argument("--llama-server", type=Path, default=LLAMA_SERVER,
                        help="llama-server binary (default: the one `make llama-server` builds)")
    parser.add_argument("--skip-ours", action="store_true", help="measure llama-server only")
    parser.add_argument("--skip-llama", action="store_true", help="measure our server only")
    parser.add_argument("--skip-serial", action="store_true", help="leave out our one-slot baseline")
    parser.add_argument("--max-wait", type=float, default=120,
                        help="seconds to wait, before each server start, for other processes to leave "
                             "the CPU (default 120)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a measurement is repeated when other processes used more than "
                             f"{FOREIGN_CPU_LIMIT * 100:.0f}%% of the CPU during it (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="comma-separated wave sizes (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens per request (default %(default)s)")
    parser.add_argument("--section", default="serve",
                        help="BENCHMARKS.md section to write: another model gets its own (e.g. serve-phi)")
    args = parser.parse_args()
    CONCURRENCY = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    MAX_TOKENS = args.max_tokens
    if not CONCURRENCY or min(CONCURRENCY) < 1 or MAX_TOKENS < 1:
        parser.error("--concurrency takes positive wave sizes, --max-tokens a positive count")
    if args.reps < 1 or args.prefix_trials < 0 or args.retries < 0:
        parser.error("--reps must be >= 1, --prefix-trials and --retries >= 0")
    if args.variants and args.model:
        parser.error("--variants compares the bundled SmolLM2 Q4_1 with its smollm2:q8_0; drop --model")

    console = Console()
    skipped: list[str] = []
    kinds = []
    if not args.skip_ours:
        kinds += ["ours"] if args.skip_serial else ["ours", "serial"]
    if args.skip_llama:
        skipped.append("llama-server skipped (--skip-llama).")
    elif not args.llama_server.is_file():
        skipped.append(f"llama-server not measured: {args.llama_server} does not exist (build it with "
                       "`make llama-server`).")
        console.print(f"[yellow]{skipped[-1]}[/yellow]")
    else:
        kinds.insert(1, "llama")
    if not kinds:
        parser.error("nothing to measure")
    try:
        model = (args.model or locate_smollm2()).resolve()
        q8_path = q8_file(console) if args.variants else None
    except SlmkitError as exc:
        console.print(f"[red]error[/red]: {escape(str(exc))}")
        return 2

    prompts = PromptMaker(model)
    plan = [(k, model, CONCURRENCY, args.prefix_trials if k != "serial" else 0) for k in kinds]
    if q8_path:
        plan += [(k, q8_path, (VARIANT_CONCURRENCY,), 0) for k in kinds if k != "serial"]
    res: dict[str, Series] = {k: Series() for k in kinds}
    q8: dict[str, Series] = {k: Series() for k in kinds if q8_path and k != "serial"}
    problems: list[str] = []
    started = time.perf_counter()
    for rep in range(args.reps):
        for kind, path, concurrencies, trials in (plan if rep % 2 == 0 else plan[::-1]):
            target = q8 if path == q8_path else res
            try:
                run_session(kind, path, concurrencies, trials, rep, target[kind], prompts, args,
                            console, problems)
            except RuntimeError as exc:
                problems.append(f"{SERVERS[kind]}, {path.name}, rep {rep + 1}: {exc}")
                console.print(f"[red]{escape(problems[-1])}[/red]")
    console.print(f"measured in {time.perf_counter() - started:.0f} s")

    counts = [n for series in res.values() for waves in series.waves.values() for w in waves.values()
              for n in w.prompt_tokens]
    prompt_range = f"{min(counts)}–{max(counts)}" if counts else f"~{PROMPT_TOKENS[0]}–{PROMPT_TOKENS[1]}"
    prefix_tokens = prompts.count(prompts.prefix_pair("prefix-0-0")[0])
    print_tables(console, res, q8, prefix_tokens)
    console.print(foreign_cpu_note(res, q8, args.retries))
    for p in problems:
        console.print(f"[red]problem[/red]: {escape(p)}")
    files = [model] + ([q8_path] if q8_path else [])
    if not args.no_write:
        text = markdown(res, q8, files, args, prompt_range, prefix_tokens, problems, skipped)
        console.print(f"wrote {write_section(args.section, text)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
