"""Image prompts in the batching engine: different images behind identical placeholder ids never
share KV (no prefix-cache hit past the first image), batched or one after another, and chunked
prefill cuts image rows across chunks correctly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from slmkit.backends.torch_native import TorchModel  # noqa: E402
from slmkit.engine.engine import Engine, Request  # noqa: E402
from slmkit.engine.generator import Generator  # noqa: E402
from slmkit.types import SamplingParams  # noqa: E402
from tests.vision_fixtures import gradient_image, write_tiny_vision_checkpoint  # noqa: E402

PARAMS = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
TEXT = "<|user|>\n<|image_1|>\nWhat is it?<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return TorchModel(write_tiny_vision_checkpoint(tmp_path_factory.mktemp("vision-engine"), num_crops=4))


def alone(model, prompt) -> list[int]:
    runner = model.create_runner(context_length=2048, max_sequences=1, max_batch_tokens=2048)
    gen = Generator(runner, PARAMS)
    gen.append_tokens(prompt.token_ids, prompt.embeddings)
    return [gen.generate_next_token() for _ in range(PARAMS.max_tokens)]


def test_different_images_never_share_a_cached_prefix(model):
    prompts = [model.vision.build(TEXT, [gradient_image(w, h, seed=s)], num_crops=1)
               for w, h, s in ((640, 480, 1), (640, 480, 2), (480, 640, 3))]
    assert prompts[0].token_ids == prompts[1].token_ids  # same placeholders, different pictures
    expected = [alone(model, p) for p in prompts]
    assert expected[0] != expected[1] or expected[1] != expected[2]
    runner = model.create_runner(context_length=2048, max_sequences=4, max_batch_tokens=256)
    engine = Engine(runner, model.tokenizer, prefix_caching=True)
    out: dict[str, list[int]] = {}

    def submit(i: int, tag: str):
        out[tag] = []
        engine.add_request(Request(prompts[i].token_ids, PARAMS, tag, prompts[i].embeddings),
                           lambda o, sink=out[tag]: sink.extend(o.token_ids))

    for i in range(3):  # together, prefilled in 256-token chunks
        submit(i, f"batch{i}")
    engine.run_until_done()
    for i in range(3):  # one after another: a finished image prompt must not serve as a cached prefix
        submit(i, f"later{i}")
        engine.run_until_done()
        assert engine.scheduler.cached_cells() == 0
    assert [out[f"batch{i}"] for i in range(3)] == expected
    assert [out[f"later{i}"] for i in range(3)] == expected
