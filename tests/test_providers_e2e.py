"""The Ollama and OpenAI-compatible providers against a real `slm serve` (the session's `server`
fixture: SmolLM2 loaded), greedy, so the answer is known."""

from __future__ import annotations

import asyncio

import pytest

from slmkit.providers import ProviderRequest, get_provider, load_config
from slmkit.types import SamplingParams

pytestmark = pytest.mark.slow

FOUR = [{"role": "user", "content": "What is 2+2? Answer with a number."}]  # greedy: "The answer is 4."


def test_ollama_provider_against_slm_serve(server, tmp_path):
    provider = get_provider("ollama", config=load_config(tmp_path, env={"OLLAMA_HOST": server.base}))
    request = ProviderRequest("smollm2", messages=FOUR, params=SamplingParams(temperature=0, max_tokens=30))
    outs = list(provider.stream(request))
    assert "".join(o.text for o in outs).strip() == "The answer is 4."
    last = outs[-1]
    assert last.finish_reason == "stop" and last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert last.timings.decode_seconds > 0


def test_openai_provider_against_slm_serve_with_vllm_extras(server, tmp_path):
    provider = get_provider("openai", config=load_config(tmp_path, env={"OPENAI_BASE_URL": server.base + "/v1"}))
    request = ProviderRequest("smollm2", messages=FOUR,
                              params=SamplingParams(temperature=0, max_tokens=30, top_k=1, repetition_penalty=1.0))

    async def collect():
        return [out async for out in provider.astream(request)]

    outs = asyncio.run(collect())
    assert "".join(o.text for o in outs).strip() == "The answer is 4."
    assert outs[-1].finish_reason == "stop" and outs[-1].usage.completion_tokens > 0

    completion = ProviderRequest("smollm2", prompt="The capital of France is",
                                 params=SamplingParams(temperature=0, max_tokens=3))
    outs = list(provider.stream(completion))
    assert outs[-1].finish_reason == "length" and outs[-1].usage.completion_tokens == 3
