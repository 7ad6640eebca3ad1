"""Driving the batching engine to completion in tests."""

from __future__ import annotations

from slmkit.engine.engine import Engine, Request


def collect_tokens(runner, tokenizer, prompts, params, **engine_options) -> list[list[int]]:
    """Token ids generated for each prompt, all submitted to one engine at once."""
    engine = Engine(runner, tokenizer, **engine_options)
    outputs: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        outputs[f"r{i}"] = []
        engine.add_request(Request(list(prompt), params, f"r{i}"),
                           lambda out, sink=outputs[f"r{i}"]: sink.extend(out.token_ids))
    engine.run_until_done()
    return [outputs[f"r{i}"] for i in range(len(prompts))]


def submit_together(engine, prompts, params, *, abort_at=None):
    """(tokens, texts, finish reasons) of the prompts submitted to `engine` together (requests
    ``r0``, ``r1``, ...), run to the end; ``abort_at``: abort ``r0`` once it has that many tokens."""
    from slmkit.engine.engine import Request

    outs = {i: [] for i in range(len(prompts))}

    def sink(i):
        def emit(out):
            outs[i].append(out)
            if abort_at is not None and i == 0 and sum(len(o.token_ids) for o in outs[0]) == abort_at:
                engine.abort("r0")
        return emit

    for i, prompt in enumerate(prompts):
        engine.add_request(Request(list(prompt), params, f"r{i}"), sink(i))
    engine.run_until_done()
    tokens = [[t for o in outs[i] for t in o.token_ids] for i in outs]
    texts = ["".join(o.text for o in outs[i]) for i in outs]
    reasons = [outs[i][-1].finish_reason for i in outs]
    return tokens, texts, reasons


def assert_same_distribution(a, b) -> None:
    """Chi-square homogeneity test, row by row, of two ``[positions, 3]`` tallies of sampled
    tokens (2 degrees of freedom: 13.82 is the 0.999 quantile, from the tables)."""
    critical = 13.82
    for pos in range(len(a)):
        x, y = a[pos], b[pos]
        total = x + y
        expected_x, expected_y = total * x.sum() / total.sum(), total * y.sum() / total.sum()
        stat = float(((x - expected_x) ** 2 / expected_x + (y - expected_y) ** 2 / expected_y).sum())
        assert stat < critical, (pos, x, y, stat)

