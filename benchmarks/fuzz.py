"""Runs the server fuzzing (tests/test_fuzz_server.py) and publishes what it sent: examples per
route and the statuses they got. Writes the `fuzz` section of BENCHMARKS.md.

    python benchmarks/fuzz.py [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import today, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    stats_file = Path(tempfile.mkdtemp()) / "fuzz.json"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_fuzz_server.py"], cwd=ROOT,
                            env={**os.environ, "SLMKIT_FUZZ_STATS": str(stats_file)}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    rows = [f"| `{route}` | {sum(codes.values())} | {', '.join(f'{k}: {v}' for k, v in codes.items())} |"
            for route, codes in stats.items()]
    total = sum(sum(c.values()) for c in stats.values())
    server_errors = sum(v for c in stats.values() for k, v in c.items() if k.startswith("5"))
    markdown = "\n".join([
        f"## Fuzzing (`benchmarks/fuzz.py`, {today()})",
        "",
        "schemathesis over the server's own OpenAPI schema (bodies that follow it, half of them steered "
        "to the loaded model with at most 8 tokens, and bodies that break it), plus arbitrary JSON, deep "
        "nesting, bytes that are not UTF-8 and lone surrogates on every POST route; fixed seeds, so the "
        "same cases each run. Checks: no 5xx, no call past its 90 s timeout, every error in its API's "
        "own shape, the engine idle afterwards and the server still answering correctly.",
        "",
        "| route | examples | statuses |",
        "|---|---|---|",
        *rows,
        "",
        f"{total} requests in {seconds:.0f} s, {server_errors} server errors; pytest: {tail}.",
    ])
    print(markdown)
    if not args.no_write:
        write_section("fuzz", markdown)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
