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
