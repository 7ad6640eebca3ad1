"""Our `Generator` loop vs a raw llama-cpp-python low-level greedy loop, in one run.

Same GGUF, same context size, threads and flash-attention setting; greedy decoding of N tokens
after a ~200-token prompt. Median of several alternating repetitions. Checks both loops produce
identical tokens, then writes the `decode` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/decode.py [--model PATH_OR_NAME] [--tokens 128] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
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
from slmkit.store.bundled import locate_smollm2
from slmkit.store.quantize import quantize_gguf
from slmkit.types import SamplingParams

CONTEXT = 2048
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
    "inference engine that drives the computation. In this benchmark we measure that last part."
)


class RawLoop:
    """The leanest honest low-level loop: batch_get_one, llama_decode, argmax of the last row."""

    def __init__(self, path: Path, threads: int):
        init_llama()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = CONTEXT
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))

    def run(self, prompt: list[int], n: int) -> tuple[list[int], float, float]:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        started = time.perf_counter()
        tokens = (llama_cpp.llama_token * len(prompt))(*prompt)
        assert llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(tokens, len(prompt))) == 0
        out = []
        one = (llama_cpp.llama_token * 1)()
        first = None
        for _ in range(n):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            token = int(np.argmax(logits))
            out.append(token)
            if first is None:
                first = time.perf_counter()
            if len(out) == n:
                break
            one[0] = token
            assert llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
        return out, first - started, time.perf_counter() - first

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


class OurLoop:
    """slmkit's public token loop: LlamaCppModel -> runner -> Generator."""

    def __init__(self, path: Path, threads: int):
        self.model = LlamaCppModel(path)
        self.runner = self.model.create_runner(context_length=CONTEXT, max_sequences=1, threads=threads)

    def run(self, prompt: list[int], n: int) -> tuple[list[int], float, float]:
        params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
        started = time.perf_counter()
        with Generator(self.runner, params) as gen:
            gen.append_tokens(prompt)
            gen.generate_next_token()
            first = time.perf_counter()
            while not gen.is_done():
                gen.generate_next_token()
            done = time.perf_counter()
            return gen.get_sequence()[len(prompt):], first - started, done - first

    def close(self) -> None:
        self.runner.close()
        self.model.close()


def measure(path: Path, threads: int, n: int, reps: int) -> dict:
    ours, raw = OurLoop(path, threads), RawLoop(path, threads)
    prompt = ours.model.tokenizer.encode(PROMPT)
    ours.run(prompt, 8), raw.run(prompt, 8)  # warm up caches and thread pools
    results = {"ours": [], "raw": []}
    tokens = {}
    for _ in range(reps):
        for name, loop in (("raw", raw), ("ours", ours)):
            ids, prefill, decode = loop.run(prompt, n)
            tokens[name] = ids
            results[name].append((len(prompt) / prefill, (n - 1) / decode))
    ours.close(), raw.close()
    summary = {"prompt_tokens": len(prompt), "identical": tokens["ours"] == tokens["raw"]}
    for name, rows in results.items():
        summary[name] = {"prefill": median([r[0] for r in rows]), "decode": median([r[1] for r in rows])}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GGUF path or store name (default: bundled SmolLM2 Q4_1, and its Q8_0)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()

    if args.model:
        from slmkit.store.store import ModelStore

        path = Path(args.model) if args.model.endswith(".gguf") else ModelStore().resolve(args.model).path
        files = {path.name: path}
    else:
        original = locate_smollm2()
        q8 = Path(tempfile.gettempdir()) / "slmkit-bench-smollm2-q8_0.gguf"
        if not q8.exists():
            quantize_gguf(original, q8, "q8_0")
        files = {"SmolLM2-135M Q4_1 (shipped)": original, "SmolLM2-135M Q8_0": q8}

    console = Console()
    table = Table("model", "prompt tok", "raw prefill tok/s", "ours prefill tok/s", "raw decode tok/s",
                  "ours decode tok/s", "decode ours/raw", "same tokens")
    rows, all_identical = [], True
    for label, path in files.items():
        s = measure(path, args.threads, args.tokens, args.reps)
        all_identical &= s["identical"]
        ratio = s["ours"]["decode"] / s["raw"]["decode"]
        row = [label, str(s["prompt_tokens"]), f"{s['raw']['prefill']:.0f}", f"{s['ours']['prefill']:.0f}",
               f"{s['raw']['decode']:.1f}", f"{s['ours']['decode']:.1f}", f"{ratio:.3f}×",
               "yes" if s["identical"] else "NO"]
        table.add_row(*row)
        rows.append(row)
    console.print(table)

    lines = [
        "## Decode: `Generator` loop vs raw llama-cpp-python (`benchmarks/decode.py`)",
        "",
        f"{today()} · {cpu_model()} · {args.threads} threads · llama-cpp-python {version('llama-cpp-python')} · "
        f"greedy, {args.tokens} tokens after the prompt, context {CONTEXT}, median of {args.reps} alternating runs. "
        "Goal: decode ≥ 0.97× raw.",
        "",
        "| " + " | ".join(table.columns[i].header for i in range(len(table.columns))) + " |",
        "|" + "---|" * len(table.columns),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Raw = `llama_batch_get_one` + `llama_decode` + numpy argmax of the last logits row; ours = "
        "`LlamaCppModel` → `LlamaCppRunner` (our numpy-backed batch) → `Generator` with `Sampler`. "
        "Reproduce: `make bench` or `.venv/bin/python benchmarks/decode.py`.",
    ]
    if not args.no_write:
        console.print(f"wrote {write_section('decode', chr(10).join(lines))}")
    if not all_identical:
        console.print("[red]the two loops produced different tokens[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
