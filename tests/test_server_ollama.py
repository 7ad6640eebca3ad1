"""`slm serve`'s Ollama API (/api/*) through the real `ollama` client, on the real SmolLM2.

The unit tests at the top (options, durations, the NDJSON stream's error and abort paths) need no
server; the rest share the session's `server` fixture from conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import numpy as np
import ollama
import pytest

from slmkit.errors import InvalidParameterError, SlmkitError
from slmkit.server.ollama_protocol import parse_keep_alive, sampling_params, timestamp
from slmkit.server.ollama_routes import Generation
from slmkit.types import RequestOutput, SamplingParams, Usage

slow = pytest.mark.slow

FOUR = [{"role": "user", "content": "What is 2+2? Answer with a number."}]  # greedy: "The answer is 4."
GREEDY = {"temperature": 0, "num_predict": 30}


# -- without a server ---------------------------------------------------------------------
@pytest.mark.parametrize("value,seconds", [
    (None, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("10s", 10.0), ("1.5h", 5400.0), ("250ms", 0.25),
    ("0", 0.0), (0, 0.0), (90, 90.0), (2.7, 2.0), (-1, -1.0), ("-1m", -1.0),
])
def test_keep_alive_reads_go_durations_and_seconds(value, seconds):
    assert parse_keep_alive(value, default=300.0) == seconds


@pytest.mark.parametrize("value", ["soon", "10", "5 m", "", True, [1], {"s": 1}])
def test_keep_alive_refuses_what_ollama_refuses(value):
    with pytest.raises(InvalidParameterError, match="keep_alive"):
        parse_keep_alive(value, default=300.0)


def test_options_map_onto_sampling_params_over_the_model_defaults():
    defaults = SamplingParams(temperature=0.2, top_p=0.9)
    params, asked = sampling_params({}, defaults, default_max_tokens=None, structure={}, logprobs=None)
    assert (params.temperature, params.top_p, params.max_tokens, asked) == (0.2, 0.9, None, None)
    options = {"num_predict": 12, "temperature": 0, "top_k": 40, "repeat_penalty": 1.1, "seed": 7, "stop": ["\n"],
               "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": 0.25, "num_ctx": 4096, "mirostat": 0,
               "typical_p": 1.0, "use_mmap": True, "not_an_option": "ignored"}
    params, asked = sampling_params(options, defaults, default_max_tokens=None, structure={"response_format": "json_object"}, logprobs=2)
    assert (params.max_tokens, asked, params.temperature, params.top_k, params.top_p) == (12, 12, 0.0, 40, 0.9)
    assert (params.repetition_penalty, params.seed, params.stop, params.min_p) == (1.1, 7, ["\n"], 0.05)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, 0.25)
    assert params.response_format == "json_object" and params.logprobs == 2
    params, asked = sampling_params({"num_predict": -1, "seed": -1, "top_k": -1}, defaults,
                                    default_max_tokens=256, structure={}, logprobs=None)
    assert (params.max_tokens, asked, params.seed, params.top_k) == (None, None, None, 0)
    params, _ = sampling_params({"num_predict": -2, "temperature": None}, defaults, default_max_tokens=256,
                                structure={}, logprobs=None)
    assert params.max_tokens is None and params.temperature == 0.2


@pytest.mark.parametrize("options,where", [
    ({"temperature": "hot"}, "options.temperature"), ({"num_predict": "10"}, "options.num_predict"),
    ({"seed": True}, "options.seed"), ({"stop": [1]}, "options.stop"), ({"use_mmap": 1}, "options.use_mmap"),
    ({"temperature": -1}, "options.temperature"), ({"repeat_penalty": 0}, "options.repeat_penalty"),
    ({"top_p": 1.5}, "options.top_p"),
])
def test_wrong_option_types_and_values_name_the_option(options, where):
    with pytest.raises(InvalidParameterError) as caught:
        sampling_params(options, SamplingParams(), default_max_tokens=None, structure={}, logprobs=None)
    assert caught.value.param == where and caught.value.message.startswith(where + ": ")


def test_timestamps_are_rfc3339_utc_with_nanoseconds():
    assert timestamp(ns=1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    now = datetime.fromisoformat(timestamp()[:26] + "+00:00")  # Python reads at most microseconds
    assert abs(now - datetime.now(timezone.utc)) < timedelta(seconds=5)


class FakeStream:
    """Stands in for `ctx.stream(...)`: yields outputs, then maybe fails; records being closed."""

    def __init__(self, outputs, error=None):
        self.outputs, self.error, self.closed = list(outputs), error, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.outputs:
            return self.outputs.pop(0)
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration

    async def aclose(self):
        self.closed = True


def _job(**kwargs) -> Generation:
    served = SimpleNamespace(keep_alive=300.0, last_used=0.0)
    return Generation(ctx=None, served=served, model="m", kind="chat", prompt_ids=[1, 2],
                      params=SamplingParams(), started=time.perf_counter(), load_seconds=0.0, **kwargs)


def _drain(agen) -> list[dict]:
    async def run():
        return [json.loads(line) async for line in agen]

    return asyncio.run(run())


def test_an_error_after_the_stream_started_is_an_error_line_and_closes_the_request():
    job = _job()
    stream = FakeStream([RequestOutput("Hel", [5])], error=SlmkitError("the engine stopped"))
    lines = _drain(job.lines(stream))
    assert lines[0]["message"] == {"role": "assistant", "content": "Hel"} and lines[0]["done"] is False
    assert lines[-1] == {"error": "the engine stopped"} and stream.closed


def test_the_final_line_carries_counts_and_durations_in_nanoseconds():
    job = _job(unload_after=True)
    final = RequestOutput("lo", [6], finish_reason="length", usage=Usage(prompt_tokens=2, completion_tokens=2))
    final.timings.prefill_seconds, final.timings.decode_seconds = 0.25, 0.5
    lines = _drain(job.lines(FakeStream([RequestOutput("Hel", [5]), final])))
    assert [line["message"]["content"] for line in lines] == ["Hel", "lo", ""]
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] == "length"
    assert (last["prompt_eval_count"], last["eval_count"]) == (2, 2)
    assert (last["prompt_eval_duration"], last["eval_duration"]) == (250_000_000, 500_000_000)
    assert all(isinstance(last[k], int) for k in ("total_duration", "load_duration"))
    assert job.served.keep_alive == 0  # keep_alive 0: unloaded once idle, after the request


def test_leaving_the_stream_early_closes_the_engine_request():
    stream = FakeStream([RequestOutput("a", [1]), RequestOutput("b", [2]), RequestOutput("c", [3])])

    async def read_one_and_leave():
        agen = _job().lines(stream)
        first = await agen.__anext__()
        await agen.aclose()  # what Starlette does when the client disconnects
        return first

    assert json.loads(asyncio.run(read_one_and_leave()))["message"]["content"] == "a"
    assert stream.closed


# -- through the real server --------------------------------------------------------------
@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.base, timeout=120)


def running_sequences(server) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith("slmkit_running_sequences{"))


@slow
def test_chat_answers_with_ollama_counts_and_stream_joins_to_it(client):
    whole = client.chat(model="smollm2", messages=FOUR, options=GREEDY)
    assert "4" in whole.message.content and whole.message.role == "assistant"
    assert whole.done and whole.done_reason == "stop" and whole.model == "smollm2"
    assert whole.prompt_eval_count > 10 and 0 < whole.eval_count <= 30
    assert whole.total_duration >= whole.eval_duration > 0 and whole.prompt_eval_duration > 0
    created = datetime.fromisoformat(whole.created_at[:26] + "+00:00")
    assert abs(created - datetime.now(timezone.utc)) < timedelta(minutes=5)

    parts = list(client.chat(model="smollm2", messages=FOUR, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].message.content == ""
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count and parts[-1].done_reason == "stop"


@slow
def test_generate_streams_raw_text_and_templated_prompts_return_their_context(client):
    parts = list(client.generate(model="smollm2", prompt="The capital of France is", raw=True, stream=True,
                                 options={"temperature": 0, "num_predict": 2}))
    assert "".join(p.response for p in parts) == " Paris."
    assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == 2
    assert parts[-1].context is None  # raw mode: no context, as in Ollama

    out = client.generate(model="smollm2", prompt="What is 2+2? Answer with a number.", options=GREEDY)
    assert "4" in out.response and out.done_reason == "stop"
    assert len(out.context) == out.prompt_eval_count + out.eval_count


@slow
def test_options_seed_stop_json_and_ignored_options(client):
    creative = {"temperature": 1.0, "seed": 42, "num_predict": 8, "num_ctx": 8192, "num_thread": 3, "bogus": 1}
    first = client.chat(model="smollm2", messages=[{"role": "user", "content": "Tell me a story."}],
                        options=creative)
    again = client.chat(model="smollm2", messages=[{"role": "user", "content": "Tell me a story."}],
                        options=creative)
    assert first.message.content == again.message.content and first.eval_count == 8

    stopped = client.generate(model="smollm2", prompt="The capital of France is", raw=True,
                              options={"temperature": 0, "num_predict": 8, "stop": ["."]})
    assert stopped.response == " Paris" and stopped.done_reason == "stop"

    # Unconstrained, SmolLM2 opens this answer with "```json"; JSON mode makes it start the object
    # (test_server_openai.py parses whole objects; a few tokens keep this test fast).
    ask = [{"role": "user", "content": "Describe a cat as a JSON object with keys name and color."}]
    as_json = client.chat(model="smollm2", messages=ask, format="json",
                          options={"temperature": 0, "num_predict": 4})
    assert as_json.message.content.startswith("{")


@slow
def test_list_show_ps_and_version(client, server):
    listed = {m.model: m for m in client.list().models}
    smollm2 = [m for name, m in listed.items() if name.startswith("smollm2:")]
    assert smollm2 and all(m.details.format == "gguf" and m.details.family == "llama" for m in smollm2)
    assert {m.details.quantization_level for m in smollm2} <= {"Q4_1", "Q8_0"}
    assert all(m.details.parameter_size == "134.5M" and len(m.digest) == 64 and m.size > 50e6 for m in smollm2)
    assert listed["all-minilm:latest"].details.family == "bert"

    shown = client.show("smollm2")
    assert shown.capabilities == ["completion"] and shown.details.family == "llama"
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelinfo["general.parameter_count"] == 134515008
    assert "im_start" in shown.template and "FROM " in shown.modelfile
    assert "temperature" in shown.parameters  # the manifest's defaults, under Ollama's names
    assert client.show("all-minilm").capabilities == ["embedding"]

    client.chat(model="smollm2", messages=[])  # make sure it is loaded
    running = client.ps().models
    assert [m.name for m in running if m.name.startswith("smollm2")], running
    model = next(m for m in running if m.name.startswith("smollm2"))
    assert model.context_length == 2048 and model.size_vram == 0
    assert model.expires_at > datetime.now(timezone.utc)

    assert httpx.get(f"{server.base}/api/version", timeout=10).json() == {"version": "0.1.0"}


@slow
def test_embed_and_the_legacy_embeddings_route(client):
    out = client.embed(model="all-minilm", input=["The cat sat on the mat.", "A cat was sitting on a rug.",
                                                   "Stock markets fell sharply today."])
    vectors = np.array(out.embeddings)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert out.prompt_eval_count > 10 and out.total_duration >= out.load_duration
    legacy = client.embeddings(model="all-minilm", prompt="The cat sat on the mat.")
    assert np.allclose(legacy.embedding, vectors[0], atol=1e-5)
    short = client.embed(model="all-minilm:latest", input="hello", dimensions=16)
    assert len(short.embeddings[0]) == 16
    assert client.embed(model="all-minilm", input=[]).embeddings == []


@slow
def test_load_keep_alive_and_unload(client, server):
    def smollm2_running():
        return [m for m in client.ps().models if m.name.startswith("smollm2")]

    loaded = client.chat(model="smollm2", messages=[], keep_alive=-1)
    assert loaded.done and loaded.done_reason == "load" and loaded.message.content == ""
    assert smollm2_running()[0].expires_at > datetime.now(timezone.utc) + timedelta(days=3650)

    unloaded = client.generate(model="smollm2", keep_alive=0)
    assert unloaded.done_reason == "unload" and not smollm2_running()

    # keep_alive 0 on a real request: answered, then unloaded once idle (the reaper looks each second).
    out = client.generate(model="smollm2", prompt="The capital of France is", raw=True, keep_alive="0s",
                          options={"temperature": 0, "num_predict": 2})
    assert out.response == " Paris."
    deadline = time.monotonic() + 10
    while smollm2_running():
        assert time.monotonic() < deadline, "keep_alive 0 did not unload the model"
        time.sleep(0.2)

    assert client.generate(model="smollm2", keep_alive="5m").done_reason == "load"
    expires = smollm2_running()[0].expires_at
    assert timedelta(minutes=4) < expires - datetime.now(timezone.utc) <= timedelta(minutes=5, seconds=5)
    assert httpx.get(f"{server.base}/health", timeout=10).json()["status"] == "ok"


@slow
def test_disconnect_mid_stream_aborts_the_generation(server):
    body = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5,", "raw": True,
            "options": {"temperature": 0, "num_predict": 1000}}
    with httpx.stream("POST", f"{server.base}/api/generate", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = response.iter_lines()
        got = [json.loads(next(lines)) for _ in range(3)]
    assert all(not line["done"] for line in got)
    deadline = time.monotonic() + 10  # 1000 tokens would take over a minute here
    while running_sequences(server):
        assert time.monotonic() < deadline, "the sequence kept running after the client left"
        time.sleep(0.1)


LONG_PROMPT = "hello " * 3000
CHAT = {"model": "smollm2", "messages": FOUR}
BAD_INPUTS = [
    # (path, body or raw bytes, status, fragment the error must contain)
    ("/api/chat", b'{"model":', 400, "not valid JSON"),
    ("/api/chat", b"", 400, "empty"),
    ("/api/chat", [1, 2], 400, "JSON object"),
    ("/api/chat", {**CHAT, "options": {"temperature": "hot"}}, 400, "options.temperature"),
    ("/api/chat", {**CHAT, "options": {"num_predict": 5000}}, 400, "2048"),
    ("/api/chat", {**CHAT, "options": "hot"}, 400, "options"),
    ("/api/chat", {**CHAT, "model": "no-such-model"}, 404, "no-such-model"),
    ("/api/chat", {**CHAT, "model": "/etc/passwd.gguf"}, 404, "model"),
    ("/api/chat", {**CHAT, "model": ""}, 400, "model"),
    ("/api/chat", {"messages": FOUR}, 400, "model"),
    ("/api/chat", {**CHAT, "messages": "hi"}, 400, "messages"),
    ("/api/chat", {**CHAT, "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, 400, "images"),
    ("/api/chat", {**CHAT, "format": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}, 400,
     "nope"),
    ("/api/chat", {**CHAT, "format": "xml"}, 400, "format"),
    ("/api/chat", {**CHAT, "tools": [{"type": "function", "function": {"name": "no spaces"}}]}, 400, "tools"),
    ("/api/chat", {**CHAT, "stream": "yes"}, 400, "stream"),
    ("/api/chat", {**CHAT, "keep_alive": "soon"}, 400, "keep_alive"),
    ("/api/generate", {"model": "smollm2", "prompt": "hi", "images": ["aGk="]}, 400, "images"),
    ("/api/generate", {"model": "smollm2", "prompt": "hi", "template": "{{ .Prompt }}"}, 400, "template"),
    ("/api/generate", {"model": "smollm2", "prompt": 5}, 400, "prompt"),
    ("/api/generate", {"model": "smollm2", "prompt": LONG_PROMPT, "raw": True}, 400, "3001 tokens"),
    ("/api/show", {"model": "no-such-model"}, 404, "no-such-model"),
    ("/api/show", {"model": "../etc"}, 404, "model"),
    ("/api/pull", {"model": "no-such-model"}, 404, "no-such-model"),
    ("/api/embed", {"model": "smollm2", "input": "hi"}, 404, "smollm2"),
    ("/api/embed", {"model": "all-minilm", "input": "x " * 600, "truncate": False}, 400, "tokens"),
    ("/api/embed", {"model": "all-minilm", "input": 5}, 400, "input"),
]


@slow
@pytest.mark.parametrize("path,body,status,fragment", BAD_INPUTS,
                         ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_gets_ollamas_error_shape(server, path, body, status, fragment):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{server.base}{path}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert list(error) == ["error"] and isinstance(error["error"], str)
    assert fragment in error["error"], error


@slow
def test_too_long_prompt_names_both_counts_and_the_server_keeps_working(server, client):
    body = {"model": "smollm2", "prompt": "What is 2+2?", "options": {"num_predict": 5000}}
    error = httpx.post(f"{server.base}/api/generate", json=body, timeout=30).json()["error"]
    assert "2048" in error and "5000" in error and "options.num_predict" in error
    assert client.generate(model="smollm2", prompt="The capital of France is", raw=True,
                           options={"temperature": 0, "num_predict": 2}).response == " Paris."


# Last: an explicit pull builds and checks the Q8_0 variant, which may make it the default.
@slow
def test_pull_bundled_models_and_refuse_unknown_ones(client):
    statuses = [p.status for p in client.pull("smollm2", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert client.pull("smollm2:q8_0").status == "success"
    for name, status in (("smollm2:q2_k", 404), ("llama3.2", 404), ("phi3-mini-4k", 503)):
        with pytest.raises(ollama.ResponseError) as caught:
            client.pull(name)
        assert caught.value.status_code == status and name.split(":")[-1] in caught.value.error
