"""Provider model strings through LLM, the CLI and the server's gateway, against real peers:
another `slm serve` speaking the OpenAI and Ollama APIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from server_process import ServerProcess

from slmkit import LLM, SamplingParams

pytestmark = pytest.mark.slow
SLM = str(Path(sys.executable).with_name("slm"))
GREEDY = SamplingParams(temperature=0, max_tokens=128)
TWO_PLUS_TWO = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def peer(slmkit_home):
    """The remote peer: its own `slm serve` that recomputes every prompt, as the local LLM does.
    Greedy equality needs the same computation on both sides: the shared server's prefix cache
    (warmed by other tests with the same prompt) computes the prompt's tail as a shorter chunk,
    and llama.cpp's float results depend on chunk shape, enough to flip a near-tie at the end token."""
    proc = ServerProcess("--model", "smollm2", "--parallel", "4", "--context-length", "2048", "--no-prefix-cache")
    yield proc
    proc.stop()


@pytest.fixture
def peer_env(peer, monkeypatch):
    env = {"OPENAI_BASE_URL": f"{peer.base}/v1", "OPENAI_API_KEY": "unused", "OLLAMA_HOST": peer.base}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_one_string_switches_between_local_and_remote(peer_env, llm):
    local = llm.chat(TWO_PLUS_TWO, GREEDY)
    for model in ("openai:smollm2", "ollama:smollm2"):
        remote = LLM(model)
        answer = remote.chat(TWO_PLUS_TWO, GREEDY)
        assert answer.text == local.text, model
        assert answer.finish_reason == "stop" and answer.usage.completion_tokens == local.usage.completion_tokens
        streamed = "".join(d.text for d in remote.chat(TWO_PLUS_TWO, GREEDY, stream=True))
        assert streamed == local.text
    paris = LLM("openai:smollm2").generate("The capital of France is", SamplingParams(temperature=0, max_tokens=3))
    assert paris.text.startswith(" Paris")


def test_cli_runs_and_lists_remote_models(peer_env):
    env = {**os.environ, **peer_env}
    out = subprocess.run([SLM, "run", "openai:smollm2", "What is 2 + 2?", "--temperature", "0"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "4" in out.stdout
    listed = subprocess.run([SLM, "list", "--remote"], capture_output=True, text=True, timeout=60,
                            env={**env, "GITHUB_TOKEN": "", "NVIDIA_API_KEY": ""})
    assert listed.returncode == 0 and "openai" in listed.stdout and "GITHUB_TOKEN" in listed.stdout


def test_missing_credential_names_the_variable(monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("SLMKIT_HOME", os.environ["SLMKIT_HOME"])
    out = subprocess.run([SLM, "run", "github:Phi-3.5-mini-instruct", "Hi"], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"})
    assert out.returncode == 1 and "GITHUB_TOKEN" in out.stderr and "Traceback" not in out.stderr


def test_gateway_forwards_a_remote_model(peer, llm):
    gateway = ServerProcess("--parallel", "1", env={"OPENAI_BASE_URL": f"{peer.base}/v1",
                                                    "OPENAI_API_KEY": "unused"})
    try:
        client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="unused", max_retries=0)
        local = llm.chat(TWO_PLUS_TWO, GREEDY).text
        out = client.chat.completions.create(model="openai:smollm2", messages=TWO_PLUS_TWO, temperature=0,
                                             max_tokens=128)
        assert out.choices[0].message.content == local and out.choices[0].finish_reason == "stop"
        chunks = client.chat.completions.create(model="openai:smollm2", messages=TWO_PLUS_TWO, temperature=0,
                                                max_tokens=128, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == local
        with pytest.raises(openai.BadRequestError, match="logprobs"):
            client.chat.completions.create(model="openai:smollm2", messages=TWO_PLUS_TWO, logprobs=True)
    finally:
        gateway.stop()


def test_gateway_ollama_routes_forward_remote_models(peer, llm):
    """/api/chat and /api/generate of one `slm serve` forwarding to another, through its OpenAI
    and its Ollama API, with the real ollama client: the same greedy answer as the local model."""
    import ollama

    gateway = ServerProcess("--parallel", "1", env={"OPENAI_BASE_URL": f"{peer.base}/v1",
                                                    "OPENAI_API_KEY": "unused", "OLLAMA_HOST": peer.base})
    try:
        client = ollama.Client(host=gateway.base, timeout=120)
        local = llm.chat(TWO_PLUS_TWO, GREEDY)
        options = {"temperature": 0, "num_predict": 128}
        for model in ("openai:smollm2", "ollama:smollm2"):
            whole = client.chat(model=model, messages=TWO_PLUS_TWO, options=options)
            assert whole.message.content == local.text and whole.done_reason == "stop", model
            assert whole.eval_count == local.usage.completion_tokens and whole.prompt_eval_count > 0
            parts = list(client.chat(model=model, messages=TWO_PLUS_TWO, options=options, stream=True))
            assert "".join(p.message.content for p in parts) == local.text and parts[-1].done
            generated = client.generate(model=model, prompt="What is 2 + 2?", options=options)
            assert generated.response == local.text, model
        raw = "".join(p.response for p in client.generate(model="ollama:smollm2", prompt="The capital of France is",
                                                          raw=True, stream=True,
                                                          options={"temperature": 0, "num_predict": 3}))
        assert raw.startswith(" Paris")
    finally:
        gateway.stop()
