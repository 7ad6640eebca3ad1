"""Constrained (JSON Schema) vs unconstrained decoding on SmolLM2, ours and llama-server's, in one run.

    python benchmarks/structured.py [--repeats 3] [--xgrammar-path DIR]

1. Masks: compile time and mask time per token of llguidance (ours) and, when importable,
   XGrammar, on SmolLM2's 49k vocabulary, over the tokens of valid instances of a few schemas.
2. The batching engine in-process: mask time per constrained token when 8 sequences are masked
   together, and tokens forced (fast-forwarded) per sampled one.
3. HTTP: `slm serve` and llama-server (`make llama-server`, when built), each with 8 slots, the
   same chat prompt and ``response_format`` json_schema vs none, 1 and 8 concurrent requests of
   128 tokens (the schema needs more, so both sides generate all 128). Sides alternate within
   each repeat; medians with [min-max] over the repeats. Writes the ``structured`` section of
   BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, today, write_section  # noqa: E402
from serve import LLAMA_SERVER, ForeignCpu, ServerProcess, free_port, server_command  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.engine.engine import Engine, Request  # noqa: E402
from slmkit.sampling.grammar import fill_masks, make_constraint  # noqa: E402
from slmkit.store.bundled import locate_smollm2  # noqa: E402

MAX_TOKENS = 128
ENGINE_TOKENS = 48  # per sequence in the in-process mask measurement
CONCURRENCY = (1, 8)
PROMPT = [{"role": "user", "content": "List the users of the system as JSON."}]
# Needs far more than MAX_TOKENS: both sides generate exactly MAX_TOKENS tokens.
LONG_SCHEMA = {"type": "array", "minItems": 40, "items": {
    "type": "object", "additionalProperties": False, "required": ["id", "name", "active"],
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                   "name": {"type": "string", "maxLength": 12}, "active": {"type": "boolean"}}}}
MASK_CASES = [  # (schema, a valid instance whose tokens are walked)
    (LONG_SCHEMA, [{"id": i, "name": f"user{i}", "active": i % 2 == 0} for i in range(40)]),
    ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                       "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}},
      "required": ["name", "age", "tags"]},
     {"name": "Ada Lovelace, the first programmer", "age": 36, "tags": ["a", "c", "b"]}),
    ({"type": "object", "properties": {"city": {"type": "string", "pattern": "^[A-Z][a-z]+$"},
                                       "temp": {"type": "number", "minimum": -50, "maximum": 60}},
      "required": ["city", "temp"], "additionalProperties": False},
     {"city": "Paris", "temp": 18.5}),
]


def spread(values: list[float], spec: str = ".1f") -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}–{max(values):{spec}}]"


# -- 1. masks: llguidance vs XGrammar -----------------------------------------------------------
def instance_tokens(llm: LLM, instance) -> list[int]:
    return llm.tokenizer.encode(json.dumps(instance), add_special=False)


def bench_llguidance(llm: LLM) -> dict:
    compile_s, mask_s, tokens = [], [], 0
    for schema, instance in MASK_CASES:
        params = SamplingParams(json_schema={**schema, "x-guidance": {"whitespace_flexible": True}})
        started = time.perf_counter()
        constraint = make_constraint(llm.tokenizer, params, llm.runner.vocab_size)
        compile_s.append(time.perf_counter() - started)
        for token in instance_tokens(llm, instance):
            started = time.perf_counter()
            allowed = fill_masks([constraint])[0]
            mask_s.append(time.perf_counter() - started)
            assert allowed[token], "the instance is valid: each of its tokens must be allowed"
            constraint.accept(token)
            tokens += 1
    return {"compile_ms": [1e3 * s for s in compile_s], "mask_us": [1e6 * s for s in mask_s]}


def bench_xgrammar(llm: LLM, path: str | None) -> dict | None:
    if path:
        sys.path.insert(0, path)
    try:
        import numpy as np
        import torch
        import xgrammar as xgr
    except ImportError:
        return None
    vocab = llm.runner.vocab_size
    pieces = [llm.tokenizer.token_bytes(i) or llm.tokenizer.token_text(i).encode() for i in range(vocab)]
    info = xgr.TokenizerInfo(pieces, vocab_type=xgr.VocabType.RAW, vocab_size=vocab,
                             stop_token_ids=sorted(llm.tokenizer.special.end_of_generation))
    compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
    compile_s, mask_s = [], []
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    for schema, instance in MASK_CASES:
        started = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=True)
        compile_s.append(time.perf_counter() - started)
        matcher = xgr.GrammarMatcher(compiled)
        for token in instance_tokens(llm, instance):
            started = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            mask_s.append(time.perf_counter() - started)
            bits = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")
            assert bits[token], "the instance is valid: each of its tokens must be allowed"
            assert matcher.accept_token(token)
    del torch
    return {"compile_ms": [1e3 * s for s in compile_s], "mask_us": [1e6 * s for s in mask_s]}


# -- 2. the engine, in-process ----------------------------------------------------------------
def bench_engine_masks(llm: LLM) -> dict:
    from slmkit.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(llm.model.path)
    runner = model.create_runner(context_length=1024, max_sequences=8, unified_kv=False, threads=2)
    try:
        engine = Engine(runner, model.tokenizer)
        prompt = llm.encode_prompt(llm.apply_chat_template(PROMPT))
        params = SamplingParams(temperature=0.8, max_tokens=ENGINE_TOKENS, json_schema=LONG_SCHEMA)
        for i in range(8):
            engine.add_request(Request(prompt, params.updated(seed=i), f"m{i}"), lambda out: None)
        started = time.perf_counter()
        engine.run_until_done()
        wall = time.perf_counter() - started
        s = engine.stats
        return {"mask_us_per_token": 1e6 * s.mask_seconds / max(1, s.masked), "masked": s.masked,
                "forced": s.forced, "steps": s.steps, "wall": wall,
                "mask_share": s.mask_seconds / max(1e-9, s.forward_seconds + s.sample_seconds + s.schedule_seconds)}
    finally:
        runner.close()
        model.close()


# -- 3. HTTP, ours vs llama-server --------------------------------------------------------------
def one_request(server: ServerProcess, constrained: bool) -> int:
    body = {"model": server.model_id, "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    if constrained:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "users", "schema": LONG_SCHEMA, "strict": True}}
    else:
        body["ignore_eos"] = True
    response = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=900)
    response.raise_for_status()
    data = response.json()
    if constrained:
        text = data["choices"][0]["message"]["content"]
        assert "".join(text.split()).startswith("[{"), f"{server.kind}: not constrained: {text[:80]!r}"
    return int(data["usage"]["completion_tokens"])


def wave(server: ServerProcess, constrained: bool, concurrent: int) -> tuple[float, float]:
    """(tokens/s over the wave, foreign CPU share while it ran)."""
    foreign = ForeignCpu(server.proc.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        tokens = sum(pool.map(lambda _: one_request(server, constrained), range(concurrent)))
    return tokens / (time.perf_counter() - started), foreign.share()


def bench_http(repeats: int, console) -> tuple[dict, float]:
    model = locate_smollm2()
    kinds = ["ours"] + (["llama"] if LLAMA_SERVER.exists() else [])
    rates: dict[tuple[str, int, bool], list[float]] = {}
    foreign: list[float] = []
    servers = {}
    try:
        for kind in kinds:
            port = free_port()
            servers[kind] = ServerProcess(kind, server_command(kind, model, port, LLAMA_SERVER), port,
                                          model).__enter__()
        for kind, server in servers.items():  # warm-up: first requests load caches, compile schemas
            one_request(server, True)
            one_request(server, False)
        for rep in range(repeats):
            for concurrent in CONCURRENCY:
                order = [False, True] if rep % 2 == 0 else [True, False]
                for kind in (kinds if rep % 2 == 0 else kinds[::-1]):
                    for constrained in order:
                        rate, share = wave(servers[kind], constrained, concurrent)
                        rates.setdefault((kind, concurrent, constrained), []).append(rate)
                        foreign.append(share)
                        console(f"  rep {rep + 1} {kind:5} x{concurrent} {'schema' if constrained else 'free  '}"
                                f" {rate:6.1f} tok/s (foreign CPU {share:.0%})")
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
    return rates, statistics.median(foreign) if foreign else 0.0


def markdown(masks: dict, xgr: dict | None, engine: dict, rates: dict, foreign: float, repeats: int) -> str:
    lines = [f"## structured — JSON Schema output vs free text ({today()}, {cpu_model()})", "",
             "Written by `benchmarks/structured.py`. SmolLM2-135M Q4_1, 2 threads.", ""]
    lines += ["### Masks on SmolLM2's 49k vocabulary", "",
              "| library | compile ms (3 schemas) | mask µs/token, median [min–max] | mask µs p99 |",
              "|---|---|---|---|"]
    for name, result in (("llguidance 1.9.1 (ours)", masks), ("XGrammar 0.2.9", xgr)):
        if result is None:
            lines.append(f"| {name} | not installed | | |")
            continue
        mask = sorted(result["mask_us"])
        p99 = mask[int(0.99 * (len(mask) - 1))]
        lines.append(f"| {name} | {', '.join(f'{v:.1f}' for v in result['compile_ms'])} | "
                     f"{spread(mask)} | {p99:.0f} |")
    lines += ["", f"In the engine (8 sampled sequences masked together, {ENGINE_TOKENS} tokens each): "
              f"{engine['mask_us_per_token']:.0f} µs of mask per constrained token "
              f"({engine['mask_share']:.1%} of step time); {engine['forced']} of "
              f"{engine['forced'] + engine['masked']} tokens were forced by the schema and fast-forwarded "
              f"(no sampling; run as prefill chunks, {engine['steps']} steps).", ""]
    lines += ["### Decode throughput, HTTP (tok/s, median [min–max] over "
              f"{repeats} repeats; 128 tokens per request)", "",
              "| server | concurrent | free text | json_schema | schema / free |", "|---|---|---|---|---|"]
    for kind, label in (("ours", "slm serve"), ("llama", "llama-server")):
        for concurrent in CONCURRENCY:
            free, schema = rates.get((kind, concurrent, False)), rates.get((kind, concurrent, True))
            if not free:
                lines.append(f"| {label} | {concurrent} | not built (`make llama-server`) | | |")
                break
            ratios = [s / f for s, f in zip(schema, free)]
            lines.append(f"| {label} | {concurrent} | {spread(free)} | {spread(schema)} | {spread(ratios, '.2f')} |")
    lines += ["", f"Median foreign CPU while measuring: {foreign:.0%} of the 2 cores "
              + ("(the machine was shared and not idle: absolute numbers are low and noisy; the "
                 "ratios, from waves alternated within each repeat, are what to read)." if foreign > 0.05
                 else "(the machine was quiet).")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xgrammar-path", help="a folder holding xgrammar (pip install --target), if not installed")
    parser.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    args = parser.parse_args()
    llm = LLM("smollm2", max_sequences=1)
    print("masks ...")
    masks = bench_llguidance(llm)
    xgr = bench_xgrammar(llm, args.xgrammar_path)
    print("engine ...")
    engine = bench_engine_masks(llm)
    llm.close()
    print("http ...")
    rates, foreign = bench_http(args.repeats, print)
    text = markdown(masks, xgr, engine, rates, foreign, args.repeats)
    print(text)
    if not args.no_write:
        print(f"wrote {write_section('structured', text)}")


if __name__ == "__main__":
    main()
