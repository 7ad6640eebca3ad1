"""Does a requantized variant answer like the original? Greedy tokens on a few prompts."""

from __future__ import annotations

from pathlib import Path

from slmkit.types import SamplingParams

CHECK_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
)


def greedy_tokens(path: Path, prompts=CHECK_PROMPTS, max_tokens: int = 24) -> list[list[int]]:
    from slmkit.backends.llamacpp import LlamaCppModel
    from slmkit.engine.generator import Generator

    model = LlamaCppModel(path)
    runner = model.create_runner(context_length=512, max_sequences=1)
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    results = []
    try:
        for prompt in prompts:
            with Generator(runner, params, end_token_ids=model.tokenizer.special.end_of_generation) as gen:
                gen.append_tokens(model.tokenizer.encode(prompt))
                while not gen.is_done():
                    gen.generate_next_token()
                results.append(gen.get_sequence()[-gen.generated_count :])
    finally:
        runner.close()
        model.close()
    return results


def same_greedy_answers(original: Path, variant: Path, max_tokens: int = 24) -> tuple[bool, str]:
    """(same?, a one-line report) comparing greedy tokens of the two files."""
    a, b = greedy_tokens(original, max_tokens=max_tokens), greedy_tokens(variant, max_tokens=max_tokens)
    same = sum(x == y for x, y in zip(a, b))
    return same == len(a), f"{same}/{len(a)} prompts gave the same greedy tokens (up to {max_tokens})"
