"""Our `Generator` loop vs a raw llama-cpp-python low-level greedy loop, in one run.

Same GGUF, same context size, batch size, threads and flash-attention setting (llama.cpp's
``auto``); greedy decoding of N tokens (end-of-generation ignored) after a ~200-token prompt.
Repetitions alternate (raw, ours, ours, raw, ...) so drift and noise hit both; medians are
reported. Both loops must produce identical token ids (exit code 1 otherwise). Writes the
`decode` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/decode.py [--model PATH_OR_NAME] [--also-q8] [--tokens 128] [--reps 7]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import llama_cpp
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, median, today, write_section  # noqa: E402

from slmkit.backends.llama_log import init_llama
from slmkit.backends.llamacpp import LlamaCppModel, default_threads
from slmkit.engine.generator import Generator
from slmkit.errors import SlmkitError
from slmkit.store.bundled import locate_smollm2
from slmkit.store.quantize import quantize_gguf
from slmkit.store.store import ModelStore
from slmkit.types import SamplingParams

CONTEXT = 2048
BATCH = 512  # LlamaCppRunner's default max_batch_tokens: n_batch and n_ubatch of both loops
GOAL = 0.97
PROMPT = (
    "Small language models are compact neural networks trained to understand and generate text. "
    "Because they have far fewer parameters than the largest models, they can run on an ordinary "
    "laptop processor, inside a phone, or on a small server without a graphics card. This makes "
    "them attractive for applications where privacy, cost or latency matter: a tutoring app that "
    "works offline in a classroom, a writing assistant that never sends a draft to the cloud, or an "
    "accessibility tool that reads and summarizes documents for people with low vision. Engineers "
    "who deploy them care about two numbers above all: how long the first token takes to appear, "
    "and how many tokens per second the model produces after that. Both depend on the model size, "
    "the quantization of its weights, the number of processor cores and the efficiency of the "
    "inference engine that drives the computation. In this benchmark we measure that last part, "
    "comparing a library's token loop with the simplest loop one can write directly against the "
    "engine, on the same file and the same threads, so that any gap is the price of the library."
)


@dataclass
class Run:
    token_ids: list[int]
    prefill_seconds: float  # prompt forward + first token
    decode_seconds: float  # every later token


class RawLoop:
    """The leanest honest low-level loop: batch_get_one, llama_decode, argmax of the last row."""

    def __init__(self, path: Path, threads: int):
        init_llama()  # llama_backend_init, with llama.cpp's logs captured as in slmkit
        model_params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = CONTEXT
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.model or not self.ctx:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))

    def run(self, prompt: list[int], n: int) -> Run:
        llama_cpp.llama_memory_clear(self.memory, True)
        ctx, n_vocab = self.ctx, self.n_vocab
        started = time.perf_counter()
        tokens = (llama_cpp.llama_token * len(prompt))(*prompt)
        self._decode(llama_cpp.llama_batch_get_one(tokens, len(prompt)))
        one = (llama_cpp.llama_token * 1)()
        out = []
        first = 0.0
        for i in range(n):
            if i:
                self._decode(llama_cpp.llama_batch_get_one(one, 1))
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            one[0] = token = int(np.argmax(logits))
            out.append(token)
            if not i:
                first = time.perf_counter()
        return Run(out, first - started, time.perf_counter() - first)

    def _decode(self, batch) -> None:
        rc = llama_cpp.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


class OurLoop:
    """slmkit's public token loop: LlamaCppModel -> LlamaCppRunner -> Generator."""

    def __init__(self, path: Path, threads: int):
        self.model = LlamaCppModel(path)
        self.runner = self.model.create_runner(
            context_length=CONTEXT, max_sequences=1, max_batch_tokens=BATCH, threads=threads
        )

    def run(self, prompt: list[int], n: int) -> Run:
        params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
        with Generator(self.runner, params) as gen:  # frees the sequence, like the raw clear
            started = time.perf_counter()
            gen.append_tokens(prompt)
            gen.generate_next_token()
            first = time.perf_counter()
            while not gen.is_done():
                gen.generate_next_token()
            done = time.perf_counter()
            return Run(gen.get_sequence()[len(prompt):], first - started, done - first)

    def close(self) -> None:
        self.runner.close()
        self.model.close()


@dataclass
class Speeds:
    """Tokens per second of one phase, per repetition (index i of raw and ours ran back to back)."""

    raw: list[float]
    ours: list[float]

    @property
    def raw_median(self) -> float:
        return median(self.raw)

    @property
    def ours_median(self) -> float:
        return median(self.ours)

    @property
    def ratios(self) -> list[float]:
        return [o / r for o, r in zip(self.ours, self.raw)]

    @property
    def ratio(self) -> float:
        # Per-pair ratios cancel the slow drift of a shared VM (±5 % between runs here).
        return median(self.ratios)

    def ratio_text(self) -> str:
        ratios = self.ratios
        return f"{self.ratio:.3f}× ({min(ratios):.2f}–{max(ratios):.2f})"


@dataclass
class Result:
    label: str
    path: Path
    file_type: str
    prompt_tokens: int
    identical: bool
    prefill: Speeds
    decode: Speeds


def measure(label: str, path: Path, threads: int, n: int, reps: int) -> Result:
    ours, raw = OurLoop(path, threads), RawLoop(path, threads)
    try:
        # One batch: a tokenizer with fewer pieces (the random Phi-sized model's) splits it into more tokens.
        prompt = ours.model.tokenizer.encode(PROMPT)[:BATCH]
        ours.run(prompt, 8), raw.run(prompt, 8)  # warm up caches, pages and thread pools
        runs: dict[str, list[Run]] = {"raw": [], "ours": []}
        order = [("raw", raw), ("ours", ours)]
        for _ in range(reps):
            for name, loop in order:
                runs[name].append(loop.run(prompt, n))
            order.reverse()  # raw, ours, ours, raw, ...: neither always runs right after the other
        file_type = ours.model.info.file_type
    finally:
        ours.close(), raw.close()
    reference = runs["raw"][0].token_ids
    identical = all(r.token_ids == reference for rs in runs.values() for r in rs)
    prefill = Speeds(*([len(prompt) / r.prefill_seconds for r in runs[k]] for k in ("raw", "ours")))
    decode = Speeds(*([(n - 1) / r.decode_seconds for r in runs[k]] for k in ("raw", "ours")))
    return Result(label, path, file_type, len(prompt), identical, prefill, decode)


def q8_variant(source: Path, console: Console) -> Path:
    """A Q8_0 requantization of ``source`` in the temp folder, made once and reused."""
    target = Path(tempfile.gettempdir()) / f"slmkit-bench-{source.stem.lower()}-q8_0.gguf"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        console.print(f"requantizing {source.name} to Q8_0 -> {target}")
        quantize_gguf(source, target, "q8_0")
    return target


def model_files(args: argparse.Namespace, console: Console) -> list[tuple[str, Path]]:
    if args.model:
        resolved = ModelStore().resolve(args.model)
        path = resolved.path
        label = path.name if resolved.name == str(path) else resolved.name
        files = [(label, path)]
        if args.also_q8:
            files.append((f"{label} → Q8_0", q8_variant(path, console)))
        return files
    original = locate_smollm2()
    files = [("SmolLM2-135M-Instruct Q4_1 (shipped)", original)]
    if args.also_q8 is not False:
        files.append(("SmolLM2-135M-Instruct Q8_0 (requantized)", q8_variant(original, console)))
    return files


COLUMNS = ["model", "prompt tok", "prefill raw tok/s", "prefill ours tok/s", "prefill ours/raw",
           "decode raw tok/s", "decode ours tok/s", "decode ours/raw", "same tokens"]


def row(r: Result) -> list[str]:
    return [r.label, str(r.prompt_tokens), f"{r.prefill.raw_median:.0f}", f"{r.prefill.ours_median:.0f}",
            r.prefill.ratio_text(), f"{r.decode.raw_median:.1f}", f"{r.decode.ours_median:.1f}",
            r.decode.ratio_text(), "yes" if r.identical else "**NO**"]


def markdown(results: list[Result], args: argparse.Namespace) -> str:
    command = shlex.join([".venv/bin/python", "benchmarks/decode.py", *sys.argv[1:]])
    reproduce = f"`{command}`" if sys.argv[1:] else f"`make bench` or `{command}`"
    files = "; ".join(
        f"`{r.path.name}` ({r.file_type}, {r.path.stat().st_size / 1e6:.0f} MB)" for r in results
    )
    return "\n".join([
        f"## Decode{'' if args.section == 'decode' else ' ' + results[0].path.name}: `Generator` loop vs raw "
        "llama-cpp-python (`benchmarks/decode.py`)",
        "",
        f"- Date: {today()}; CPU: {cpu_model()}; threads: {args.threads}; "
        f"llama-cpp-python {version('llama-cpp-python')}",
        f"- Models: {files}",
        f"- Greedy, {args.tokens} tokens after a {results[0].prompt_tokens}-token prompt "
        f"(end-of-generation ignored), context {CONTEXT}, batch {BATCH}, flash attention auto; "
        f"median of {args.reps} repetitions in alternating order (raw, ours, ours, raw, …). "
        f"Goal: decode ≥ {GOAL}× raw.",
        f"- Reproduce: {reproduce}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 2) + ":---:|",
        *["| " + " | ".join(row(r)) + " |" for r in results],
        "",
        "Raw = `llama_batch_get_one` + `llama_decode` + numpy argmax of `llama_get_logits_ith(ctx, -1)`; "
        "ours = `LlamaCppModel` → `LlamaCppRunner` (our numpy-backed batch) → `Generator` with its "
        "`Sampler`. Prefill = prompt forward + first token; decode = the other tokens. "
        "tok/s are medians; ours/raw is the median of the per-repetition ratios (each raw run "
        "next to an ours run), with their range in brackets.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GGUF path or store name (default: the bundled SmolLM2 Q4_1)")
    parser.add_argument("--also-q8", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure a Q8_0 requantization (default: on for the bundled "
                             "model, off with --model)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate (default 128)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per loop (default 7)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default="decode",
                        help="BENCHMARKS.md section to write: another model gets its own (e.g. decode-phi)")
    args = parser.parse_args()
    if args.tokens < 2 or args.reps < 1:
        parser.error("--tokens must be >= 2 and --reps >= 1")

    console = Console()
    try:
        files = model_files(args, console)
    except SlmkitError as exc:
        console.print(f"[red]error[/red]: {exc}")
        return 2
    results = []
    for label, path in files:
        console.print(f"measuring {label} ({path}) ...")
        results.append(measure(label, path, args.threads, args.tokens, args.reps))

    table = Table(*COLUMNS, title=f"decode.py: {args.tokens} tokens, {args.threads} threads, "
                                  f"median of {args.reps}")
    for r in results:
        table.add_row(*row(r))
    console.print(table)

    for r in results:
        if r.identical:
            console.print(f"[green]tokens identical[/green]: {r.label}: ours == raw, {args.tokens} ids "
                          f"in every repetition")
        else:
            console.print(f"[red]TOKENS DIFFER[/red]: {r.label}: ours and raw produced different ids")
        if r.decode.ratio < GOAL:
            console.print(f"[yellow]below goal[/yellow]: {r.label}: decode {r.decode.ratio:.3f}× raw "
                          f"< {GOAL}×")

    if not args.no_write:
        console.print(f"wrote {write_section(args.section, markdown(results, args))}")
    return 0 if all(r.identical for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
