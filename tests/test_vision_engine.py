"""Image prompts in the batching engine: different images behind identical placeholder ids never
share KV (no prefix-cache hit past the first image), batched or one after another, and chunked
prefill cuts image rows across chunks correctly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from slmkit.backends.torch_native import TorchModel  # noqa: E402
from slmkit.engine.engine import Engine, Request  # noqa: E402
from slmkit.types import SamplingParams  # noqa: E402
from tests.vision_fixtures import gradient_image, write_tiny_vision_checkpoint  # noqa: E402

PARAMS = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, logprobs=2)
TEXT = "<|user|>\n<|image_1|>\nWhat is it?<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return TorchModel(write_tiny_vision_checkpoint(tmp_path_factory.mktemp("vision-engine"), num_crops=4))


def run(engine: Engine, prompts, tag: str) -> list[list[tuple[int, float]]]:
    """Each request's (token, logprob) pairs; all submitted at once, then run to the end."""
    out: dict[int, list] = {}
    for i, prompt in enumerate(prompts):
        out[i] = []
        engine.add_request(Request(prompt.token_ids, PARAMS, f"{tag}{i}", prompt.embeddings),
                           lambda o, sink=out[i]: sink.extend((lp.token_id, round(lp.logprob, 4))
                                                              for lp in o.logprobs or []))
    engine.run_until_done()
    return [out[i] for i in range(len(prompts))]


def alone(model, prompt):
    runner = model.create_runner(context_length=2048, max_sequences=1, max_batch_tokens=2048)
    return run(Engine(runner, model.tokenizer, prefix_caching=False), [prompt], "alone")[0]


def test_different_images_never_share_a_cached_prefix(model):
    prompts = [model.vision.build(TEXT, [gradient_image(w, h, seed=s)], num_crops=1)
               for w, h, s in ((640, 480, 1), (640, 480, 2), (480, 640, 3))]
    assert prompts[0].token_ids == prompts[1].token_ids  # same placeholders, different pictures
    expected = [alone(model, p) for p in prompts]
    assert expected[0] != expected[1] != expected[2]  # the pictures reach the logprobs
    runner = model.create_runner(context_length=2048, max_sequences=4, max_batch_tokens=256)
    engine = Engine(runner, model.tokenizer, prefix_caching=True)
    assert run(engine, prompts, "batch") == expected  # together, prefilled in 256-token chunks
    for i, prompt in enumerate(prompts):  # one after another: a finished image prompt is no cached prefix
        assert run(engine, [prompt], f"later{i}") == [expected[i]]
        assert engine.scheduler.cached_cells() == 0
