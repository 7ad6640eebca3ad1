"""Prompt-lookup speculation in the batching engine: ours with it off and on, in one run.

Workloads: copy-heavy (repeat a passage, edit code and print it back, quote from a summary,
answer from a given context) and open-ended chat; a single stream (each prompt alone) and 8
concurrent (all together, aggregate tokens/s). Greedy, so both sides must produce the same
tokens (checked and reported). Sides alternate, each configuration is repeated, medians are
reported with their range, next to the load average: on a shared machine the spread matters.

    python benchmarks/speculative.py --repeats 3 --max-tokens 96
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import cpu_model, median, today, write_section  # noqa: E402
from slmkit.backends.llamacpp import LlamaCppModel  # noqa: E402
from slmkit.engine.engine import Engine, Request  # noqa: E402
from slmkit.store.store import ModelStore  # noqa: E402
from slmkit.text.prompt import PromptFormatter  # noqa: E402
from slmkit.types import SamplingParams  # noqa: E402

PASSAGE = ("The committee met on Tuesday to review the budget. It approved the new library, delayed the "
           "road repairs until spring, and asked the water board for a report on the supply by March. "
           "Members thanked the volunteers who ran the winter market.")
CODE = "def total(items):\n    s = 0\n    for item in items:\n        s += item.price * item.count\n    return s\n"
COPY_HEAVY = [
    f"Repeat this text exactly, word for word:\n{PASSAGE}",
    f"Rename the function total to order_total and print the whole code back:\n{CODE}",
    f"Summarize this in two sentences, quoting its exact words where you can:\n{PASSAGE}",
    f"Using only this context, answer: what did the committee delay, and until when?\nContext: {PASSAGE}",
]
OPEN_ENDED = [
    "Tell me a short story about a lighthouse keeper.",
    "What are three good habits for learning a new language?",
    "Explain why the sky is blue to a ten-year-old.",
    "Write a friendly note inviting a neighbour to dinner.",
]


def run(runner, tokenizer, prompts, params, mode) -> tuple[float, int, list[list[int]], float]:
    """(seconds, tokens generated, tokens per prompt, acceptance rate) of the prompts together."""
    engine = Engine(runner, tokenizer, prefix_caching=False, speculative=mode)
    outs = {i: [] for i in range(len(prompts))}
    for i, ids in enumerate(prompts):
        engine.add_request(Request(ids, params, f"r{i}"), lambda o, sink=outs[i]: sink.extend(o.token_ids))
    started = time.perf_counter()
    engine.run_until_done()
    seconds = time.perf_counter() - started
    tokens = [outs[i] for i in range(len(prompts))]
    return seconds, sum(map(len, tokens)), tokens, engine.stats.acceptance_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2:original")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    resolved = ModelStore().resolve(args.model)
    model = LlamaCppModel(resolved.path)
    runner = model.create_runner(context_length=2048, max_sequences=8, unified_kv=False)
    formatter = PromptFormatter(model.tokenizer, architecture=model.info.architecture,
                                template=model.info.chat_template, system_prompt=None, model_name=args.model)

    def encode(text):
        return formatter.encode_prompt(formatter.apply_chat_template([{"role": "user", "content": text}]))

    workloads = {"copy-heavy": [encode(p) for p in COPY_HEAVY], "open-ended": [encode(p) for p in OPEN_ENDED]}
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    load_before = os.getloadavg()
    results: dict[tuple[str, str, str], list[float]] = {}
    accept: dict[tuple[str, str], list[float]] = {}
    same = {}
    for repeat in range(args.repeats):
        for name, prompts in workloads.items():
            for shape in ("single", "8 concurrent"):
                order = ("off", "ngram") if repeat % 2 == 0 else ("ngram", "off")
                tokens_by_mode = {}
                for mode in order:
                    if shape == "single":
                        total_s, total_n, toks, rates = 0.0, 0, [], []
                        for ids in prompts:
                            s, n, t, r = run(runner, model.tokenizer, [ids], params, mode)
                            total_s, total_n = total_s + s, total_n + n
                            toks += t
                            rates.append(r)
                        rate = median(rates)
                    else:
                        total_s, total_n, toks, rate = run(runner, model.tokenizer, prompts * 2, params, mode)
                    results.setdefault((name, shape, mode), []).append(total_n / total_s)
                    if mode == "ngram":
                        accept.setdefault((name, shape), []).append(rate)
                    tokens_by_mode[mode] = toks
                    print(f"{repeat} {name:10} {shape:12} {mode:5} {total_n / total_s:7.1f} tok/s", flush=True)
                same.setdefault((name, shape), []).append(tokens_by_mode["off"] == tokens_by_mode["ngram"])
    load_after = os.getloadavg()
    runner.close()
    model.close()

    def cell(values):
        return f"{median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

    rows = []
    for name in workloads:
        for shape in ("single", "8 concurrent"):
            off, on = results[(name, shape, "off")], results[(name, shape, "ngram")]
            ratios = [b / a for a, b in zip(off, on)]
            rows.append(f"| {name} | {shape} | {cell(off)} | {cell(on)} | {median(ratios):.2f}× "
                        f"({min(ratios):.2f}–{max(ratios):.2f}) | {median(accept[(name, shape)]):.0%} | "
                        f"{'yes' if all(same[(name, shape)]) else 'NO'} |")
    busy = max(load_before[0], load_after[0]) > 0.75 * (os.cpu_count() or 1)
    section = "\n".join([
        "## Speculative decoding (prompt lookup) in the batching engine",
        "",
        f"`benchmarks/speculative.py` — {today()}, {cpu_model()}, {os.cpu_count()} cores, {args.model} "
        f"(llama.cpp), greedy, {args.max_tokens} tokens per request, {args.repeats} repeats with the sides "
        "alternating; tokens/s as median (min–max), aggregate over the prompts. The engine is driven "
        "directly (no HTTP).",
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        "| workload | shape | off tok/s | ngram tok/s | on / off | accepted | same tokens |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        ("**The machine was busy (load average above its cores) during this run: the ratios are noisy "
         "and the issue's floors cannot be judged from it.** " if busy else "")
        + "llama-server was not run in this benchmark.",
    ])
    print(section)
    if not args.no_write:
        write_section("speculative", section)


if __name__ == "__main__":
    main()
