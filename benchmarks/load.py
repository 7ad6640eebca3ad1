"""Bounded load on a real `slm serve`: 200 requests from 32 concurrent clients, mixed OpenAI /
Ollama / embeddings, stream and not, 20 % cancelled mid-stream, 5 % bad bodies.

Every greedy answer is compared with the same request's answer on the idle server (the server
runs with --batch-invariant, so a right answer is bit-identical under load). Afterwards running
sequences, queue and KV cells must be back at zero. Writes the `load` section of BENCHMARKS.md.

    python benchmarks/load.py [--requests 200] [--concurrency 32] [--repeats 2] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, today, write_section  # noqa: E402
from _server import SlmServer  # noqa: E402

from slmkit.tools.loadmix import plan, process_stats, reference_answers, run_mix  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    load = os.getloadavg()[0]
    server = SlmServer("--model", "smollm2", "--parallel", "8", "--context-length", "1024", "--batch-invariant",
                       "--keep-alive", "-1", "--max-queue", "64")
    rows, failures = [], []
    try:
        jobs = plan(args.requests, seed=12)
        with console.status("reference answers on the idle server..."):
            references = asyncio.run(reference_answers(server.base, jobs, max_tokens=args.max_tokens))
        for repeat in range(args.repeats):
            before = process_stats(server.pid)
            with console.status(f"run {repeat + 1}/{args.repeats}: {args.requests} requests, "
                                f"{args.concurrency} clients..."):
                report = asyncio.run(run_mix(server.base, jobs, concurrency=args.concurrency,
                                             max_tokens=args.max_tokens, references=references))
            held = server.wait_idle(30)
            after = process_stats(server.pid)
            summary = report.summary()
            console.print(f"run {repeat + 1}: {summary}; held after: {held}; RSS {before['rss_mib']:.0f} -> "
                          f"{after['rss_mib']:.0f} MiB, fds {before['fds']} -> {after['fds']}")
            failures += report.problems + [f"held after run {repeat + 1}: {held}"] * any(held.values())
            codes = ", ".join(f"{k}: {v}" for k, v in summary["by_status"].items())
            rows.append(f"| {repeat + 1} | {summary['requests']} | {args.concurrency} | {summary['cancelled']} | "
                        f"{summary['bad_bodies']} | {codes} | {summary['problems']} | {summary['p50_s']:.2f} | "
                        f"{summary['p99_s']:.2f} | {summary['wall_s']:.0f} | {before['rss_mib']:.0f} → "
                        f"{after['rss_mib']:.0f} | {before['fds']} → {after['fds']} | "
                        f"{', '.join(f'{k} {v:g}' for k, v in held.items())} |")
    finally:
        code = server.stop()
    for problem in failures[:20]:
        console.print(f"[red]problem:[/red] {problem}")
    markdown = "\n".join([
        f"## Bounded load (`benchmarks/load.py`, {today()})",
        "",
        f"`slm serve --model smollm2 --parallel 8 --batch-invariant` on {cpu_model()} ({os.cpu_count()} cores; "
        f"load average {load:.1f} when it started{', not idle' if load > 0.5 else ''}). The mix: OpenAI chat and "
        "completions, Ollama chat and generate, embeddings; stream and not; 20 % of streams cancelled "
        f"after 1–3 chunks; 5 % bad bodies (must be 400); greedy, {args.max_tokens} tokens. Every answer "
        "is checked against the same request on the idle server (bit-identical in batch-invariant mode), "
        "so an answer delivered to the wrong request would count as a problem.",
        "",
        "| run | requests | clients | cancelled | bad bodies | outcomes | problems | p50 s | p99 s | wall s "
        "| server RSS MiB | fds | held after (running, waiting, KV cells) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Problems: {len(failures)}. Server exit code after SIGTERM: {code}.",
    ])
    console.print(markdown)
    if not args.no_write:
        write_section("load", markdown)
    return 1 if failures or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
