"""Where a batched decode step's time goes: llama_decode vs our Python around it.

The batching `Engine` (scheduler, vectorized greedy sampling, detokenization, stop checks,
output callbacks) against the leanest batched loop one can write on the same runner: one
chunk per sequence, ``runner.forward``, one ``argmax`` over all rows. Same GGUF, threads, KV
layout (one stream per sequence) and tokens (checked). Repetitions alternate; medians are
reported. Writes the `engine` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/engine_step.py [--sequences 16] [--tokens 64] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, median, today, write_section  # noqa: E402

from slmkit.backends.base import Chunk
from slmkit.backends.llamacpp import LlamaCppModel, default_threads
from slmkit.engine.engine import Engine, Request
from slmkit.store.bundled import locate_smollm2
from slmkit.types import SamplingParams

CONTEXT = 1024
TOPICS = ["rivers", "volcanoes", "bread", "chess", "bees", "trains", "glass", "owls", "tea", "maps",
          "clocks", "salt", "kites", "coral", "paper", "wind", "bridges", "moss", "ink", "comets"]


def prompts(tokenizer, n: int) -> list[list[int]]:
    return [tokenizer.encode(f"<|im_start|>user\nWrite a short paragraph about {TOPICS[i % len(TOPICS)]}."
                             f"<|im_end|>\n<|im_start|>assistant\n", add_special=False) for i in range(n)]


def raw_loop(runner, ids: list[list[int]], tokens: int) -> tuple[float, list[list[int]]]:
    for s in range(len(ids)):
        runner.free(s)
    out = [[] for _ in ids]
    started = time.perf_counter()
    logits = runner.forward([Chunk(s, p, 0, True) for s, p in enumerate(ids)])
    for step in range(tokens):
        next_ids = np.argmax(logits, axis=1).tolist()
        for s, t in enumerate(next_ids):
            out[s].append(t)
        if step == tokens - 1:
            break
        logits = runner.forward([Chunk(s, [t], len(ids[s]) + step, True) for s, t in enumerate(next_ids)])
    return time.perf_counter() - started, out


def engine_loop(runner, tokenizer, ids, tokens) -> tuple[float, list[list[int]], Engine]:
    for s in range(len(ids)):
        runner.free(s)
    engine = Engine(runner, tokenizer, prefix_caching=False)
    out: dict[str, list[int]] = {f"r{i}": [] for i in range(len(ids))}
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    started = time.perf_counter()
    for i, p in enumerate(ids):
        engine.add_request(Request(p, params, f"r{i}"), lambda o, k=f"r{i}": out[k].extend(o.token_ids))
    engine.run_until_done()
    return time.perf_counter() - started, [out[f"r{i}"] for i in range(len(ids))], engine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(locate_smollm2()))
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    model = LlamaCppModel(args.model)
    runner = model.create_runner(context_length=CONTEXT, max_sequences=args.sequences, unified_kv=False)
    ids = prompts(model.tokenizer, args.sequences)
    raw_times, ours_times, fractions, step_ms, python_ms = [], [], [], [], []
    for rep in range(args.reps):
        order = ("raw", "ours") if rep % 2 == 0 else ("ours", "raw")
        for which in order:
            if which == "raw":
                seconds, raw_tokens = raw_loop(runner, ids, args.tokens)
                raw_times.append(seconds)
            else:
                seconds, our_tokens, engine = engine_loop(runner, model.tokenizer, ids, args.tokens)
                ours_times.append(seconds)
                st = engine.stats
                fractions.append(st.python_fraction)
                step_ms.append(1000 * (st.schedule_seconds + st.forward_seconds + st.sample_seconds) / st.steps)
                python_ms.append(1000 * (st.schedule_seconds + st.sample_seconds) / st.steps)
        if our_tokens != raw_tokens:
            print("token mismatch between the engine and the raw loop", file=sys.stderr)
            return 1
    total = args.sequences * args.tokens
    raw_tps, ours_tps = total / median(raw_times), total / median(ours_times)
    md = "\n".join([
        f"`benchmarks/engine_step.py` — {today()}, {cpu_model()}, {default_threads()} threads, "
        f"{Path(args.model).name}, {args.sequences} greedy sequences × {args.tokens} tokens (prefill "
        f"included), one KV stream per sequence, {args.reps} alternating repetitions, medians; tokens "
        "identical in both loops.",
        "",
        "| loop | tokens/s | ms per step | of which our Python (ms) | Python share |",
        "|---|---|---|---|---|",
        f"| raw batched loop (forward + one argmax) | {raw_tps:.1f} | — | — | — |",
        f"| slmkit Engine | {ours_tps:.1f} | {median(step_ms):.2f} | {median(python_ms):.2f} | "
        f"{100 * median(fractions):.1f} % |",
        "",
        f"Engine / raw: **{ours_tps / raw_tps:.3f}×**. \"Our Python\" is scheduling, batch building, sampling, "
        "detokenization, stop checks and output callbacks per step; the rest is `llama_decode`.",
    ])
    print(md)
    if not args.no_write:
        write_section("engine", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
