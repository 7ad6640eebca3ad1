"""The engines side by side on one checkpoint: llama.cpp (GGUF q4_k_m, q8_0), ONNX Runtime GenAI
(int4, fp32), OpenVINO (int4, fp32), MLX (mlx-lm int4, fp32) and our torch engine (fp32, bf16), all
from `slm convert` of one Hugging Face folder. MLX takes no thread count: its Linux CPU backend runs
on one thread.

Models: SmolLM2-135M as a HF folder (transformers reads the bundled Q4_1 GGUF with ``gguf_file=``,
dequantized, and saves it), and a random-weight model of Phi-3.5-mini's exact shape (3.8B, written
shard by shard in bf16 so it never sits in memory whole). Each engine runs in its own process
(clean RSS, one model in memory at a time): load time, prefill tok/s (a 256-token prompt, time to
first token), single-stream decode tok/s (greedy, ``(N-1)/(t_total-ttft)``) and peak RSS. The
ceiling per format: batch-1 decode reads every weight once per token, so tok/s <= read bandwidth /
weight bytes. Also: four sequences decoded together through our runner (one og.Generator /
InferRequest each) against ORT GenAI's own batched ``og.Engine`` and OpenVINO GenAI's
``ContinuousBatchingPipeline`` (paged attention, one batched forward per step). Writes the `engines` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/engines.py [--threads 1] [--tokens 32] [--no-phi] [--report]

`make bench` runs the SmolLM2 part (minutes). The Phi-sized part takes about half an hour on two
cores and ~35 GB of disk under ~/.cache/slmkit (bf16 source, the f32 GGUF on the way, GGUFs);
rows whose engine needs more memory than is free are skipped and say so.

One thread by default: the 2 cores are shared, and llama.cpp with 2 threads on a busy machine
falls 95 -> 7 tok/s (REFERENCE 8h) while 1 thread holds 51; every engine gets the same count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rich.console import Console  # noqa: E402
from _engine_models import PHI35_PARAMETERS, WORK, convert_all, meminfo, phi35_folder, smollm2_folder  # noqa: E402
from _quiet import FOREIGN_CPU_LIMIT, quiet_section, wait_until_quiet  # noqa: E402
from _report import cpu_model, today, write_section  # noqa: E402

PROMPT_TOKENS = 256
# MLX's Linux CPU backend runs matmuls on one thread of reference BLAS (~3.5 GFLOP/s here): a
# 256-token prefill of the 3.8B model (7.6 GFLOP a token) would take ~9 minutes, twice. Its
# Phi-sized rows prefill a shorter prompt, and the table says so.
SLOW_PROMPT_TOKENS = 32
CONSOLE = Console()
# (label, convert format, precision, backend, torch dtype)
ENGINES = [
    ("llama.cpp q4_k_m", "gguf", "int4", "llamacpp", None),
    ("llama.cpp q8_0", "gguf", "int8", "llamacpp", None),
    ("ORT GenAI int4", "onnx", "int4", "ortgenai", None),
    ("ORT GenAI fp32", "onnx", "fp32", "ortgenai", None),
    ("torch fp32", None, None, "torch", "float32"),
    ("torch bf16", None, None, "torch", "bfloat16"),
    ("OpenVINO int4", "openvino", "int4", "openvino", None),
    ("MLX int4", "mlx", "int4", "mlx", None),
    ("OpenVINO fp32", "openvino", "fp32", "openvino", None),
    ("MLX fp32", "mlx", "fp32", "mlx", None),
]
# Bytes of RAM per parameter each engine (and, for ONNX, its builder, which loads the whole HF
# model in fp32) needs, with some headroom: the Phi-sized rows run only when that much is free.
# The ORT builder loads the checkpoint (bf16 here) and builds the whole fp32 graph before quantizing
# it to int4; OpenVINO's exporter traces the torch model. Measured at 3.8B on 24 GiB (2026-12-02):
# every conversion finished in RAM (peak swap 0.1 GB); one ORT int4 attempt with ~10 GB held by
# other work was killed at its quantize step, hence the headroom (swap counts, see available_memory).
MEMORY_PER_PARAMETER = {"llama.cpp q4_k_m": 0.75, "llama.cpp q8_0": 1.2, "ORT GenAI int4": 6.0,
                        "ORT GenAI fp32": 6.0, "OpenVINO int4": 6.0, "OpenVINO fp32": 6.0,
                        "torch fp32": 4.4, "torch bf16": 2.3,
                        # mlx-lm's converter casts the whole model to fp32 before quantizing or saving it.
                        "MLX int4": 4.8, "MLX fp32": 4.8}

def weight_bytes(path: Path, dtype: str | None) -> int:
    if path.is_file():
        return path.stat().st_size
    if (path / "genai_config.json").is_file():
        return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".onnx", ".data"))
    if (path / "openvino_model.bin").is_file():
        return (path / "openvino_model.bin").stat().st_size
    from slmkit.backends.mlx import is_mlx_folder

    if is_mlx_folder(path):
        return sum(p.stat().st_size for p in path.glob("*.safetensors"))
    from slmkit.store.gguf_info import read_hf_summary

    return read_hf_summary(path).parameters * (4 if dtype == "float32" else 2)


def read_bandwidth(nbytes: int = 1 << 29) -> float:
    """Bytes/s one core reads from memory: the fastest of 5 passes (a numpy sum) over 512 MB, far
    past the caches. Other work on the shared machine slows single passes, hence the best one."""
    import numpy as np

    data = np.ones(nbytes // 4, dtype=np.float32)
    data.sum()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return nbytes / best


# -- one engine, in its own process ------------------------------------------------------------
def measure(path: str, backend: str, dtype: str | None, threads: int, tokens: int) -> dict:
    from slmkit import LLM, SamplingParams

    if backend == "ortgenai":
        import onnxruntime_genai  # noqa: F401 - libraries count in the baseline, not in the model's RSS
    elif backend == "openvino":
        import openvino  # noqa: F401
    elif backend == "torch":
        import torch  # noqa: F401
    elif backend == "mlx":
        import mlx_lm.utils  # noqa: F401
    baseline = _rss_mb()
    started = time.perf_counter()
    llm = LLM(path, backend=backend, dtype=dtype or "auto", threads=threads, max_sequences=1,
              context_length=PROMPT_TOKENS + tokens + 8)
    prompt_tokens = PROMPT_TOKENS
    if backend == "mlx" and llm.info.size_bytes > 1e9:  # the Phi-sized files, int4 included
        prompt_tokens = SLOW_PROMPT_TOKENS
    load = time.perf_counter() - started
    words = "the quick brown fox jumps over a lazy dog while small models run on laptops " * 64
    prompt = llm.tokenizer.encode(words, add_special=False)[:prompt_tokens]
    first = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
    llm.generate(prompt[:16], first)  # warm up kernels and allocations
    prefill = []
    for _ in range(2):
        t = time.perf_counter()
        llm.generate(prompt, first)
        prefill.append(time.perf_counter() - t)
    out = llm.generate(prompt[:8], SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True))
    decode = (len(out.token_ids) - 1) / out.timings.decode_seconds
    peak = _peak_rss_mb()
    return {"load_s": load, "prefill_tps": prompt_tokens / min(prefill), "prompt_tokens": prompt_tokens,
            "decode_tps": decode, "rss_mb": peak,
            "model_rss_mb": peak - baseline, "first_ids": out.token_ids[:8]}


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """VmHWM: this process's own peak (getrusage's ru_maxrss survives exec, so a child would
    report its parent's peak when that was larger)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def batch_vs_og_engine(path: str, threads: int, tokens: int, sequences: int = 4) -> dict:
    """Our batching engine over one og.Generator per sequence vs ORT GenAI's og.Engine, same prompts."""
    import numpy as np
    import onnxruntime_genai as og

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from engine_helpers import collect_tokens

    from slmkit import LLM, SamplingParams

    llm = LLM(path, threads=threads, max_sequences=sequences, context_length=256)
    prompts = [llm.tokenizer.encode(f"Write about topic number {i} in detail:", add_special=False) for i in range(sequences)]
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    collect_tokens(llm.runner, llm.tokenizer, prompts[:1], SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    for seq_id in range(sequences):  # the warm-up engine left its sequence cached for prefix reuse
        llm.runner.free(seq_id)
    t = time.perf_counter()
    ours = collect_tokens(llm.runner, llm.tokenizer, prompts, params)
    ours_s = time.perf_counter() - t
    model = llm.model.og_model
    engine = og.Engine(model)
    requests = []
    for prompt in prompts:
        request = engine.create_request()
        turn = og.TurnOptions(request)
        turn.set_max_generated_tokens(tokens)
        turn.set_do_sample(False)
        request.begin_turn(np.asarray(prompt, dtype=np.int32), turn)
        requests.append(request)
    buffer = engine.create_event_buffer(256)
    theirs: dict[int, list[int]] = {}
    t = time.perf_counter()
    while engine.has_pending_requests():
        for event in engine.run(buffer):
            theirs.setdefault(id(event.request), []).append(int(event.token))
    og_s = time.perf_counter() - t
    assert all(len(o) == tokens for o in ours), [len(o) for o in ours]
    same = sorted(map(tuple, ours)) == sorted(tuple(v[:tokens]) for v in theirs.values())
    return {"ours_tps": sequences * tokens / ours_s, "og_engine_tps": sequences * tokens / og_s, "same": same}


def batch_vs_ov_pipeline(path: str, threads: int, tokens: int, sequences: int = 4) -> dict:
    """Our batching engine over one InferRequest per sequence vs OpenVINO GenAI's
    ContinuousBatchingPipeline (same IR, f32 like our runner), same prompts."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from engine_helpers import collect_tokens

    from slmkit import LLM, SamplingParams

    llm = LLM(path, threads=threads, max_sequences=sequences, context_length=256)
    prompts = [llm.tokenizer.encode(f"Write about topic number {i} in detail:", add_special=False) for i in range(sequences)]
    collect_tokens(llm.runner, llm.tokenizer, prompts[:1], SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    for seq_id in range(sequences):
        llm.runner.free(seq_id)
    t = time.perf_counter()
    ours = collect_tokens(llm.runner, llm.tokenizer, prompts, SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True))
    ours_s = time.perf_counter() - t
    llm.close()
    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size, scheduler.max_num_seqs, scheduler.max_num_batched_tokens = 1, sequences, 256  # cache in GB
    pipe = ov_genai.ContinuousBatchingPipeline(path, scheduler, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "INFERENCE_NUM_THREADS": threads})
    config = ov_genai.GenerationConfig(max_new_tokens=tokens, do_sample=False, ignore_eos=True)
    t = time.perf_counter()
    handles = [pipe.add_request(i, ov.Tensor(np.asarray([p], dtype=np.int64)), config) for i, p in enumerate(prompts)]
    while pipe.has_non_finished_requests():
        pipe.step()
    pipe_s = time.perf_counter() - t
    theirs = [list(h.read_all()[0].generated_ids) for h in handles]
    return {"ours_tps": sequences * tokens / ours_s, "pipeline_tps": sequences * tokens / pipe_s, "same": ours == theirs}


def run_child(*args: str, timeout: int = 1800) -> dict | str:
    cmd = [sys.executable, __file__, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return f"failed: {last[:160]}" if done.returncode > 0 else f"killed by signal {-done.returncode} (out of memory?)"
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_memory() -> int:
    """RAM a conversion can take, swap included: the converters' peak (ORT's builder and
    optimum-intel hold an fp32 copy of the model beside their output) is a one-off that may page;
    the measured engines themselves fit in RAM."""
    return meminfo("MemAvailable") + meminfo("SwapFree")


# -- the whole run -----------------------------------------------------------------------------
def bench_model(store, key: str, name: str, folder: Path, args, bandwidth: float, *, memory_guard: bool) -> None:
    """Measure each engine on one model; every row is kept as soon as it exists (a long run that
    stops half-way keeps what it measured)."""
    for engine in ENGINES:
        if args.only and engine[0] not in args.only:
            continue
        label, fmt, precision, backend, dtype = engine
        if memory_guard:
            need = MEMORY_PER_PARAMETER[label] * PHI35_PARAMETERS
            if available_memory() < need:
                skipped = f"skipped: needs ~{need / 1e9:.0f} GB, {available_memory() / 1e9:.0f} GB free (RAM + swap)"
                remember(key, [(label, None, None, skipped)])
                print(label, skipped, flush=True)
                continue
        try:
            path = convert_all(store, name, folder, [engine])[label]
        except Exception as exc:  # noqa: BLE001 - one failing conversion is a row, not the end of the run
            remember(key, [(label, None, None, f"conversion failed: {str(exc)[:160]}")])
            print(label, "conversion failed:", exc, flush=True)
            continue
        size = weight_bytes(path, dtype)
        with quiet_section():  # teammates' work waits; then wait for the CPU itself
            wait_until_quiet(CONSOLE, args.max_wait)
            result = run_child("--measure", str(path), backend, dtype or "auto", str(args.threads), str(args.tokens))
        remember(key, [(label, size, bandwidth / size, result)])
        print(label, result, flush=True)
        if fmt is not None and args.drop_over and size > args.drop_over * 1e9:
            store.remove(f"{name}-{fmt}-{precision}")  # disk: the fp32 exports are 15 GB each at 3.8B
            print(f"removed {name}-{fmt}-{precision} ({size / 1e9:.1f} GB) from the benchmark store", flush=True)


RESULTS = WORK / "results.json"


def remember(model: str, rows) -> None:
    """Keep a model's rows; rows of engines not measured this time (--only) stay as they were."""
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if isinstance(rows, list) and isinstance(saved.get(model), list):
        fresh = {row[0]: row for row in rows}
        rows = [fresh.pop(row[0], row) for row in saved[model]] + list(fresh.values())
    saved[model] = rows
    RESULTS.write_text(json.dumps(saved, indent=1))


def recalled(model: str):
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    return saved.get(model)


def prompt_note(result: dict) -> str:
    n = result.get("prompt_tokens", PROMPT_TOKENS)
    return "" if n == PROMPT_TOKENS else f" ({n}-token prompt)"


def table(name: str, rows, bandwidth: float) -> list[str]:
    """One model's rows; the last column compares each engine's first 8 greedy ids with the
    reference (torch fp32, else the first engine that ran): how far its precision moves the answer."""
    measured = {label: result for label, _, _, result in rows if isinstance(result, dict)}
    reference = measured.get("torch fp32") or next(iter(measured.values()), {"first_ids": []})
    lines = [f"**{name}**", "",
             "| engine | weights | decode tok/s | ceiling tok/s | of ceiling | prefill tok/s | load s | peak RSS (model) "
             "| first ids = reference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, size, _, result in rows:
        ceiling = bandwidth / size if size else None
        if isinstance(result, str) or size is None:
            lines.append(f"| {label} | {'' if size is None else f'{size / 1e6:.0f} MB'} | {result} | | | | | | |")
            continue
        ids, ref = result["first_ids"], reference["first_ids"]
        agree = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
        lines.append(f"| {label} | {size / 1e6:.0f} MB | {result['decode_tps']:.1f} | {ceiling:.1f} | "
                     f"{result['decode_tps'] / ceiling:.0%} | {result['prefill_tps']:.{1 if result['prefill_tps'] < 10 else 0}f}{prompt_note(result)} | {result['load_s']:.2f} | "
                     f"{result['rss_mb']:.0f} MB ({result['model_rss_mb']:.0f} MB) | {agree}/{len(ref)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--no-phi", action="store_true", help="SmolLM2 only")
    parser.add_argument("--phi-only", action="store_true", help="the Phi-sized model only")
    parser.add_argument("--report", action="store_true", help="rewrite the section from the kept results")
    parser.add_argument("--only", action="append", metavar="ENGINE",
                        help="measure only this engine (repeatable, e.g. 'ORT GenAI int4'); kept rows of the others stay")
    parser.add_argument("--max-wait", type=float, default=300,
                        help="seconds to wait before each measurement for other processes to leave the CPU")
    parser.add_argument("--drop-over", type=float, default=0, metavar="GB",
                        help="remove a conversion bigger than this from the benchmark store once measured (disk)")
    parser.add_argument("--measure", nargs=5, metavar=("PATH", "BACKEND", "DTYPE", "THREADS", "TOKENS"))
    parser.add_argument("--og-engine", nargs=3, metavar=("PATH", "THREADS", "TOKENS"))
    parser.add_argument("--ov-pipeline", nargs=3, metavar=("PATH", "THREADS", "TOKENS"))
    args = parser.parse_args()
    if args.measure:
        path, backend, dtype, threads, tokens = args.measure
        print(json.dumps(measure(path, backend, None if dtype == "auto" else dtype, int(threads), int(tokens))))
        return
    if args.og_engine:
        path, threads, tokens = args.og_engine
        print(json.dumps(batch_vs_og_engine(path, int(threads), int(tokens))))
        return
    if args.ov_pipeline:
        path, threads, tokens = args.ov_pipeline
        print(json.dumps(batch_vs_ov_pipeline(path, int(threads), int(tokens))))
        return

    from slmkit.store.store import ModelStore

    store = ModelStore(WORK / "store", progress=True)
    if args.report:  # the bandwidth measured with the kept rows
        report(args, recalled("bandwidth") or read_bandwidth())
        return
    bandwidth = recalled("bandwidth") if args.only else None
    if not bandwidth:
        bandwidth = read_bandwidth()
        remember("bandwidth", bandwidth)
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s", flush=True)
    if not args.phi_only:
        bench_model(store, "smollm2", "smollm2", smollm2_folder(), args, bandwidth, memory_guard=False)
        # Each batching comparison needs its engine's conversion, which an --only run may not have made.
        for key, flag, model in (("og-engine", "--og-engine", "smollm2-onnx-int4"),
                                 ("ov-pipeline", "--ov-pipeline", "smollm2-openvino-fp32")):
            if store.manifest(model) is not None:
                with quiet_section():
                    wait_until_quiet(CONSOLE, args.max_wait)
                    batching = run_child(flag, str(store.resolve(model).path), str(args.threads), "32")
                print(key, batching, flush=True)
                remember(key, batching)
    if not args.no_phi:
        bench_model(store, "phi35", "phi35-random", phi35_folder(), args, bandwidth, memory_guard=True)
    report(args, bandwidth)


MODELS = [("smollm2", "SmolLM2-135M-Instruct (HF folder from the bundled GGUF)"),
          ("phi35", "Random Phi-3.5-mini-shaped model (3.8B, bf16 source)")]


def report(args, bandwidth: float) -> None:
    """The section from every kept row: one table per model measured so far."""
    sections: list[str] = []
    for key, title in MODELS:
        if recalled(key):
            order = {engine[0]: n for n, engine in enumerate(ENGINES)}
            rows = sorted(recalled(key), key=lambda row: order.get(row[0], len(order)))
            sections += ([""] if sections else []) + table(title, rows, bandwidth)
    write_report(args, bandwidth, sections, recalled("og-engine"), recalled("ov-pipeline"))


def write_report(args, bandwidth: float, tables: list[str], batching, ov_batching=None) -> None:
    lines = [
        "## Engines: llama.cpp vs ONNX Runtime GenAI vs OpenVINO vs MLX vs torch on one checkpoint (`benchmarks/engines.py`)",
        "",
        f"{today()}, {cpu_model()}, {args.threads} threads, greedy, prompt {PROMPT_TOKENS} tokens (prefill), "
        f"{args.tokens} new tokens (decode, batch 1). Every model comes from `slm convert` of one HF folder; "
        f"each engine runs in its own process. Ceiling = one core's read bandwidth ({bandwidth / 1e9:.1f} GB/s, best numpy pass over 512 MB) / "
        "weight bytes: batch-1 decode reads every weight once per token. Each measurement waited for a "
        f"quiet CPU (other processes under {FOREIGN_CPU_LIMIT:.0%}) and held the quiet lock against cooperating work.",
        "",
        *tables,
        "",
    ]
    if isinstance(batching, dict):
        lines.append(
            f"Four sequences decoded together (SmolLM2 ORT int4, 32 tokens each): our batching engine over one "
            f"`og.Generator` per sequence {batching['ours_tps']:.1f} tok/s, ORT GenAI's `og.Engine` "
            f"{batching['og_engine_tps']:.1f} tok/s (same tokens: {'yes' if batching['same'] else 'no'}).")
    elif batching is not None:
        lines.append(f"og.Engine comparison: {batching}")
    if isinstance(ov_batching, dict):
        lines.append(
            f"The same with OpenVINO (SmolLM2 fp32): our engine over one `InferRequest` per sequence "
            f"{ov_batching['ours_tps']:.1f} tok/s, OpenVINO GenAI's `ContinuousBatchingPipeline` "
            f"{ov_batching['pipeline_tps']:.1f} tok/s (same tokens: {'yes' if ov_batching['same'] else 'no'}).")
    elif ov_batching is not None:
        lines.append(f"ContinuousBatchingPipeline comparison: {ov_batching}")
    lines += [
        "",
        "Reading the tables: *first ids = reference* counts how many of the first 8 greedy ids an engine "
        "shares with torch fp32 (or, where that did not run, the first row): on SmolLM2 only the 4-bit "
        "formats move the answer (q4_k_m after 4 tokens, ORT int4 from the first); on the random Phi "
        "weights every logit is a near-tie, so that column says nothing there. *Of ceiling* above 100 % "
        "means the single-pass bandwidth, measured beside other work, understates what an engine's "
        "steady stream gets (and SmolLM2's 87–145 MB of quantized weights partly stay in the L3 cache). "
        "Memory: ORT GenAI's builder makes the fp32 graph before quantizing it to int4, so an int4 "
        "export needs more RAM than the fp32 model (the run prints each conversion's time and peak swap); "
        "llama.cpp q4_k_m keeps a repacked copy of its weights beside the mapped file (≈2× the file in "
        "RSS); the torch loader fills the model layer by layer (≈1× the weights). "
        "MLX rows run mlx-lm's models on MLX's Linux CPU backend (the mlx-cpu wheel), which takes no "
        "thread count and runs its matmuls on one thread in the reference BLAS it bundles, whatever "
        "--threads says; on macOS the same rows would run on Metal.",
    ]
    write_section("engines", "\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
