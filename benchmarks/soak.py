"""Soak: the load mix of `benchmarks/load.py` again and again on one `slm serve`, recording the
server's resident memory and open file descriptors after each round, then the trend.

A leak shows as a slope that stays positive round after round; allocator warm-up as a rise that
flattens. The verdict uses the second half of the rounds (after warm-up). Bounded by --minutes
and --rounds, whichever comes first. Writes the `soak` section of BENCHMARKS.md.

    python benchmarks/soak.py [--minutes 20] [--rounds 1000] [--requests 60] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, today, write_section  # noqa: E402
from _server import SlmServer  # noqa: E402

from slmkit.tools.loadmix import plan, process_stats, reference_answers, run_mix, slope  # noqa: E402

RSS_NOISE_MIB = 8.0  # growth over the second half below this is noise (allocator arenas, caches)
FD_NOISE = 2  # a keep-alive connection or two open at the moment of sampling


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    console = Console()
    load = os.getloadavg()[0]
    server = SlmServer("--model", "smollm2", "--parallel", "8", "--context-length", "1024", "--batch-invariant",
                       "--keep-alive", "-1")
    samples: list[tuple[float, int, float, int]] = []  # (minutes, requests so far, rss MiB, fds)
    problems: list[str] = []
    started = time.monotonic()
    total = 0
    try:
        jobs = plan(args.requests, seed=5)
        references = asyncio.run(reference_answers(server.base, jobs, max_tokens=args.max_tokens))
        stats = process_stats(server.pid)
        samples.append((0.0, 0, stats["rss_mib"], stats["fds"]))
        for round_index in range(args.rounds):
            if time.monotonic() - started > 60 * args.minutes:
                break
            report = asyncio.run(run_mix(server.base, jobs, concurrency=args.concurrency,
                                         max_tokens=args.max_tokens, references=references))
            total += len(report.outcomes)
            problems += report.problems
            for problem in report.problems[:5]:
                console.print(f"[red]problem:[/red] {problem}")
            held = server.wait_idle(30)
            if any(held.values()):
                problems.append(f"round {round_index + 1}: still held {held}")
            stats = process_stats(server.pid)
            minutes = (time.monotonic() - started) / 60
            samples.append((minutes, total, stats["rss_mib"], stats["fds"]))
            console.print(f"round {round_index + 1}: {total} requests, {minutes:.1f} min, RSS {stats['rss_mib']:.1f} "
                          f"MiB, fds {stats['fds']}, problems {len(problems)}")
    finally:
        code = server.stop()
    second_half = samples[len(samples) // 2:]
    rss_per_hour = slope([(m, r) for m, _, r, _ in second_half]) * 60
    rss_per_k = slope([(n, r) for _, n, r, _ in second_half]) * 1000
    fd_per_k = slope([(n, f) for _, n, _, f in second_half]) * 1000
    growth = second_half[-1][2] - second_half[0][2] if len(second_half) > 1 else 0.0
    fd_growth = max(f for *_, f in second_half) - second_half[0][3]
    verdict = ("no growth beyond noise" if growth < RSS_NOISE_MIB and fd_growth <= FD_NOISE
               else "GROWTH: investigate")
    rows = [f"| {m:.1f} | {n} | {r:.1f} | {f} |" for m, n, r, f in samples[:: max(1, len(samples) // 12)]]
    if samples and rows[-1] != f"| {samples[-1][0]:.1f} | {samples[-1][1]} | {samples[-1][2]:.1f} | {samples[-1][3]} |":
        m, n, r, f = samples[-1]
        rows.append(f"| {m:.1f} | {n} | {r:.1f} | {f} |")
    markdown = "\n".join([
        f"## Soak (`benchmarks/soak.py`, {today()})",
        "",
        f"The load mix ({args.requests} requests a round, {args.concurrency} clients, 20 % cancelled, 5 % bad "
        f"bodies, every answer checked) repeated for {samples[-1][0]:.1f} minutes on one `slm serve` "
        f"(SmolLM2, --parallel 8) on {cpu_model()}; load average {load:.1f} at the start.",
        "",
        "| minutes | requests | server RSS MiB | open fds |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Second half of the run (after warm-up): RSS slope {rss_per_hour:+.1f} MiB/hour "
        f"({rss_per_k:+.2f} MiB per 1000 requests, {growth:+.1f} MiB in all), fds {fd_per_k:+.2f} per 1000 "
        f"requests ({fd_growth:+d} at most): **{verdict}**. Problems: {len(problems)}; exit code after SIGTERM: {code}.",
    ])
    for problem in problems[:20]:
        console.print(f"[red]problem:[/red] {problem}")
    console.print(markdown)
    if not args.no_write:
        write_section("soak", markdown)
    return 1 if problems or code != 0 or verdict != "no growth beyond noise" else 0


if __name__ == "__main__":
    sys.exit(main())
