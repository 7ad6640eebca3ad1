"""Speculative decoding over HTTP: `slm serve` with prompt lookup off and on, and llama-server
without speculation and with its n-gram modes (``ngram-mod``, ``ngram-simple``), in one run on
the same GGUF, the same threads and the same prompts. With ``--draft-model``, also draft-model
speculation on both: ours (``--draft-model``) and llama-server's (``-md``, ``draft-simple``), the
same drafter for the same target (e.g. Phi-3.5-mini with a Phi-3-mini-sized drafter, which share
the 32064-token Phi-3 tokenizer; here SmolLM2 drafting for a requantized SmolLM2).

Workloads: copy-heavy (repeat a passage, edit code and print it back, quote from a summary,
answer from a given context), open-ended chat, and plain short prompts (8 concurrent x 64
tokens, the serving-overhead check); a single stream (each prompt alone, one after another)
and 8 concurrent (all at once, aggregate tokens/s). Greedy chat completions, non-streaming;
tokens are the server's ``usage.completion_tokens``. Every side runs once per repeat, in an
order rotated between repeats; medians with their range. Then the contention case: one stream
while a bounded busy process (started here) holds one core, against the quiet figure, for ours
(threads left to its governor) and llama-server (its default threads).

    python benchmarks/speculative.py --repeats 3 [--model PATH.gguf] [--draft-model PATH.gguf] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, median, today, write_section  # noqa: E402
from rich.console import Console  # noqa: E402
from serve import FOREIGN_CPU_LIMIT, LLAMA_SERVER, SLM, ForeignCpu, ServerProcess, free_port, quiet_section, wait_until_quiet  # noqa: E402

from slmkit.store.bundled import locate_smollm2  # noqa: E402

THREADS, SLOTS, CONTEXT = 2, 8, 2048
CONSOLE = Console()
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
SHORT = ["Name a fruit.", "What is 2 + 2?", "Say hello.", "Name a colour.", "What day follows Monday?",
         "Name an animal.", "What is the capital of France?", "Count to three."]
SIDES = {  # name -> (server kind, extra arguments)
    "ours off": ("ours", ["--speculative", "off"]),
    "ours ngram": ("ours", ["--speculative", "ngram"]),
    "llama none": ("llama", []),
    "llama ngram-mod": ("llama", ["--spec-type", "ngram-mod"]),
    "llama ngram-simple": ("llama", ["--spec-type", "ngram-simple"]),
}
DRAFT_MAX = 8  # most tokens drafted per step, both servers (ours: limits.DEFAULT_DRAFT_TOKENS)
OURS_SPECULATIVE = ("ours ngram", "ours draft")


def draft_sides(draft: Path) -> dict[str, tuple[str, list[str]]]:
    """The draft-model sides: ours, and llama-server's with its draft context and threads like ours."""
    return {
        "ours draft": ("ours", ["--speculative", "draft", "--draft-model", str(draft)]),
        "llama draft": ("llama", ["--spec-type", "draft-simple", "-md", str(draft), "--spec-draft-n-max",
                                  str(DRAFT_MAX), "-td", str(THREADS), "-tbd", str(THREADS)]),
    }


def command(kind: str, model: Path, port: int, extra: list[str], threads: int | None = THREADS) -> list[str]:
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "llama":
        t = ["-t", str(threads), "-tb", str(threads)] if threads else []
        return [str(LLAMA_SERVER), "-m", str(model), *common, *t, "-np", str(SLOTS), "-c", str(SLOTS * CONTEXT),
                "--no-webui", "-fa", "auto", *extra]
    t = ["--threads", str(threads)] if threads else []
    return [str(SLM), "serve", "--model", str(model), *common, "--parallel", str(SLOTS),
            "--context-length", str(CONTEXT), *t, "--no-playground", *extra]


def chat(client: httpx.Client, server: ServerProcess, prompt: str, max_tokens: int, ignore_eos: bool) -> tuple[int, str]:
    body = {"model": server.model_id, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "seed": 1}
    if ignore_eos:
        body["ignore_eos"] = True
    response = client.post(server.base_url + "/v1/chat/completions", json=body)
    response.raise_for_status()
    data = response.json()
    return data["usage"]["completion_tokens"], data["choices"][0]["message"]["content"]


def measure(server: ServerProcess, prompts: list[str], concurrent: bool, max_tokens: int,
            ignore_eos: bool = False) -> tuple[float, list[str]]:
    """(tokens/s, answers): one after another, or all at once."""
    with httpx.Client(timeout=900) as client:
        started = time.perf_counter()
        if concurrent:
            with ThreadPoolExecutor(len(prompts)) as pool:
                results = list(pool.map(lambda p: chat(client, server, p, max_tokens, ignore_eos), prompts))
        else:
            results = [chat(client, server, p, max_tokens, ignore_eos) for p in prompts]
        seconds = time.perf_counter() - started
    return sum(n for n, _ in results) / seconds, [text for _, text in results]


def measure_quiet(server: ServerProcess, *args, retries: int = 3, foreign: list[float] | None = None):
    """`measure`, after the machine settles, again while other processes took more than
    FOREIGN_CPU_LIMIT of the CPU during it (at most `retries` times); their share is recorded."""
    for attempt in range(retries + 1):
        with quiet_section():  # cooperating work (a test run holding the lock shared) waits
            wait_until_quiet(CONSOLE, 120, server.proc.pid)
            probe = ForeignCpu(server.proc.pid)
            result = measure(server, *args)
            share = probe.share()
        if share <= FOREIGN_CPU_LIMIT or attempt == retries:
            if foreign is not None:
                foreign.append(share)
            return result
        CONSOLE.print(f"  [yellow]other processes used {share:.0%} of the CPU; again[/yellow]")


def workloads(max_tokens: int) -> dict[str, tuple[list[str], bool, int, bool]]:
    """name -> (prompts, concurrent, max_tokens, ignore_eos)."""
    return {
        "copy-heavy, single": (COPY_HEAVY, False, max_tokens, False),
        "copy-heavy, 8 concurrent": (COPY_HEAVY * 2, True, max_tokens, False),
        "open-ended, single": (OPEN_ENDED, False, max_tokens, False),
        "open-ended, 8 concurrent": (OPEN_ENDED * 2, True, max_tokens, False),
        "short x 64 tokens, 8 concurrent": (SHORT, True, 64, True),
    }


class Busy:
    """One bounded busy process on one core, for the contention case."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 600\n"
                                      "while time.time() < end: pass"])
        time.sleep(2)  # let the governors notice it
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def cell(values: list[float]) -> str:
    return f"{median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def ratio(a: list[float], b: list[float]) -> str:
    values = [y / x for x, y in zip(a, b)]
    return f"{median(values):.2f}× ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: the bundled SmolLM2)")
    parser.add_argument("--draft-model", type=Path, default=None, help="a GGUF file with the model's tokenizer: "
                        "adds the draft-model sides (ours --draft-model, llama-server -md)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--sides", default=None, help="comma-separated subset of the sides (default: all)")
    parser.add_argument("--no-contention", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--section", default="speculative",
                        help="BENCHMARKS.md section to write (a run of other sides: e.g. speculative-draft)")
    args = parser.parse_args()
    model = args.model or locate_smollm2()
    if not LLAMA_SERVER.exists():
        sys.exit(f"llama-server is not built: run `make llama-server` first ({LLAMA_SERVER})")
    all_sides = {**SIDES, **(draft_sides(args.draft_model) if args.draft_model else {})}
    sides = [s.strip() for s in args.sides.split(",")] if args.sides else list(all_sides)
    unknown = [s for s in sides if s not in all_sides]
    if unknown:
        sys.exit(f"unknown sides {unknown}; choose from {list(all_sides)} (the draft ones need --draft-model)")
    loads = [os.getloadavg()[0]]
    foreign: list[float] = []
    tps: dict[tuple[str, str], list[float]] = {}
    answers: dict[tuple[str, str], list[list[str]]] = {}
    for repeat in range(args.repeats):
        order = sides[repeat % len(sides):] + sides[:repeat % len(sides)]
        for side in order:
            kind, extra = all_sides[side]
            port = free_port()
            with ServerProcess(kind, command(kind, model, port, extra), port, model) as server:
                measure(server, SHORT[:2], True, 8, True)  # warm-up
                for name, (prompts, concurrent, n, ignore_eos) in workloads(args.max_tokens).items():
                    rate, texts = measure_quiet(server, prompts, concurrent, n, ignore_eos, foreign=foreign)
                    tps.setdefault((side, name), []).append(rate)
                    answers.setdefault((side, name), []).append(texts)
                    print(f"{repeat} {side:18} {name:32} {rate:7.1f} tok/s", flush=True)
        loads.append(os.getloadavg()[0])

    contention = {}
    if not args.no_contention:
        for kind in ("ours", "llama"):
            for state in ("quiet", "busy", "quiet", "busy"):
                port = free_port()
                with ServerProcess(kind, command(kind, model, port, [], threads=None), port, model) as server:
                    measure(server, SHORT[:1], False, 8, True)
                    wait_until_quiet(CONSOLE, 120, server.proc.pid)
                    if state == "busy":
                        with Busy():
                            rate, _ = measure(server, OPEN_ENDED[:2], False, 64, True)
                    else:
                        rate, _ = measure(server, OPEN_ENDED[:2], False, 64, True)
                contention.setdefault((kind, state), []).append(rate)
                print(f"contention {kind:5} {state:5} {rate:7.1f} tok/s", flush=True)
    loads.append(os.getloadavg()[0])

    names = list(workloads(args.max_tokens))
    best_llama = {n: max((s for s in sides if s.startswith("llama")), key=lambda s: median(tps[(s, n)]))
                  for n in names} if any(s.startswith("llama") for s in sides) else {}
    spec = [s for s in OURS_SPECULATIVE if s in sides]
    rows = []
    for name in names:
        row = [name] + [cell(tps[(s, name)]) for s in sides]
        if "ours off" in sides:
            row += [ratio(tps[("ours off", name)], tps[(s, name)]) for s in spec]
        if best_llama and spec:
            best = best_llama[name]
            candidates = [s for s in sides if s.startswith("ours")] if name.startswith("short") else spec
            ours = max(candidates, key=lambda s: median(tps[(s, name)]))
            row.append(f"{ratio(tps[(best, name)], tps[(ours, name)])} ({ours} vs {best})")
        off = answers.get(("ours off", name), [])
        for s in spec:
            same = all(a == b for a, b in zip(off, answers.get((s, name), [])))
            row.append("yes" if same else "NO")
        row.append("stable" if all(t == off[0] for t in off) else "varies")
        rows.append("| " + " | ".join(row) + " |")
    head = (["workload"] + [f"{s} tok/s" for s in sides] + [f"{s} / off" for s in spec if "ours off" in sides]
            + (["ours / llama-server's best"] if best_llama and spec else [])
            + [f"{s}: same text as off" for s in spec] + ["off's text across repeats"])
    lines = [
        "## Speculative decoding over HTTP: `slm serve` vs llama-server (`benchmarks/speculative.py`"
        + ("" if args.section == "speculative" else f", {', '.join(sides)}") + ")",
        "",
        f"{today()}, {cpu_model()}, {os.cpu_count()} cores, {model.name}, {THREADS} threads and {SLOTS} slots "
        f"on both servers, greedy chat completions (non-streaming), up to {args.max_tokens} tokens "
        f"(the short prompts: exactly 64), {args.repeats} repeats with the side order rotated; tokens/s "
        "as median (min–max), aggregate over a workload's requests. 'ours / llama-server's best' compares "
        "ours with speculation on (the short prompts: our better side) against the fastest llama-server "
        f"mode on that workload. Load average (1 min) over the run: {', '.join(f'{x:.1f}' for x in loads)}; each "
        f"measurement waited for a quiet CPU and was redone while other processes took over "
        f"{FOREIGN_CPU_LIMIT:.0%} of it (their share, median {median(foreign):.1%}, max {max(foreign):.1%})."
        + (f" Draft model: {args.draft_model.name} (both servers; llama-server drafts up to {DRAFT_MAX} tokens)."
           if args.draft_model else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *rows,
    ]
    if contention:
        lines += ["", "**Contention**: one stream, 2 open-ended prompts x 64 tokens, threads left to each "
                  "server (ours: the contention-aware governor; llama-server: its default), quiet vs one "
                  "bounded busy process on one of the 2 cores (2 alternations).", "",
                  "| server | quiet tok/s | busy tok/s | busy / quiet |", "|---|---|---|---|"]
        for kind, label in (("ours", "slm serve"), ("llama", "llama-server")):
            q, b = contention[(kind, "quiet")], contention[(kind, "busy")]
            lines.append(f"| {label} | {cell(q)} | {cell(b)} | {ratio(q, b)} |")
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section(args.section, section)


if __name__ == "__main__":
    main()
