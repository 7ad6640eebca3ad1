"""The server's gateway against fake providers: provider models on the OpenAI, Azure and Ollama
routes, with the real `openai`, `azure-ai-inference` and `ollama` clients, images included.

The server runs in this process (uvicorn on a thread, no model loaded); the providers are the
fake servers of tests/fake_providers.py, found through the usual environment variables."""

from __future__ import annotations

import json
import threading
import time

import httpx
import ollama
import openai
import pytest
import uvicorn
from fake_providers import KEY, PIECES, PROMPT_TOKENS, REPLY, FakeProvider, Reply
from server_process import free_port
from test_images import DATA_URL, IMAGE_CHAT, PNG, PNG_BASE64

from slmkit.server.app import create_app
from slmkit.server.config import ServerConfig


class InProcessServer:
    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        app = create_app(ServerConfig(port=self.port, embeddings=False))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def fake_openai(monkeypatch):
    with FakeProvider("openai") as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        yield fake


@pytest.fixture
def fake_ollama(monkeypatch):
    with FakeProvider("ollama", key=None) as fake:
        monkeypatch.setenv("OLLAMA_HOST", fake.base_url)
        yield fake


@pytest.fixture
def gateway(fake_openai, fake_ollama):
    server = InProcessServer()
    yield server
    server.stop()


def ollama_client(gateway) -> ollama.Client:
    return ollama.Client(host=gateway.base, timeout=30)


# -- OpenAI and Azure routes: image parts forwarded as they are ----------------------------
def test_openai_route_forwards_image_parts(gateway, fake_openai):
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(model="openai:test-model", messages=IMAGE_CHAT)
    assert out.choices[0].message.content == REPLY
    assert fake_openai.last.body["messages"] == IMAGE_CHAT
    chunks = client.chat.completions.create(model="openai:test-model", messages=IMAGE_CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert fake_openai.last.body["messages"] == IMAGE_CHAT


def test_azure_route_forwards_image_parts(gateway, fake_openai):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import ImageContentItem, ImageDetailLevel, ImageUrl, TextContentItem, UserMessage
    from azure.core.credentials import AzureKeyCredential

    client = ChatCompletionsClient(endpoint=gateway.base, credential=AzureKeyCredential("unused"))
    out = client.complete(model="openai:test-model", messages=[UserMessage(content=[
        TextContentItem(text="What is in this picture?"),
        ImageContentItem(image_url=ImageUrl(url=DATA_URL, detail=ImageDetailLevel.LOW))])])
    assert out.choices[0].message.content == REPLY
    assert fake_openai.last.body["messages"] == IMAGE_CHAT[1:]


def test_upstream_errors_keep_their_status_when_streaming(gateway, fake_openai):
    """The first delta is awaited before the 200 goes out, so a refusal upstream is a status."""
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="unknown-model"):
        client.chat.completions.create(model="openai:unknown-model", messages=IMAGE_CHAT, stream=True)
    fake_openai.queue(Reply(400, {"error": {"message": "image too large", "type": "invalid_request_error"}}))
    with pytest.raises(openai.BadRequestError, match="image too large"):
        client.chat.completions.create(model="openai:test-model", messages=IMAGE_CHAT, stream=True)


# -- Ollama routes ------------------------------------------------------------------------
@pytest.mark.parametrize("model, fake_name", [("ollama:phi3.5", "fake_ollama"), ("openai:test-model", "fake_openai")])
def test_ollama_chat_forwards_to_a_provider(gateway, model, fake_name, request):
    fake = request.getfixturevalue(fake_name)
    client = ollama_client(gateway)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is in this picture?", "images": [PNG]}]
    whole = client.chat(model=model, messages=messages, options={"temperature": 0, "num_predict": 50})
    assert whole.model == model and whole.message.content == REPLY and whole.done_reason == "stop"
    assert whole.prompt_eval_count == PROMPT_TOKENS and whole.eval_count == len(PIECES)
    sent = fake.last.body
    if fake.kind == "ollama":
        assert sent["messages"][1] == {"role": "user", "content": "What is in this picture?", "images": [PNG_BASE64]}
        assert sent["options"]["temperature"] == 0 and sent["options"]["num_predict"] == 50
    else:  # an Ollama image reaches an OpenAI-shaped provider as a data URL part
        assert sent["messages"][1] == {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": DATA_URL}}]}
        assert sent["temperature"] == 0 and sent["max_tokens"] == 50
    parts = list(client.chat(model=model, messages=messages, stream=True))
    assert [p.message.content for p in parts[:-1]] == PIECES and all(not p.done for p in parts[:-1])
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == len(PIECES)


def test_ollama_chat_without_num_predict_asks_for_no_limit(gateway, fake_openai):
    ollama_client(gateway).chat(model="openai:test-model", messages=[{"role": "user", "content": "Hi"}])
    assert "max_tokens" not in fake_openai.last.body  # Ollama's num_predict defaults to -1


def test_ollama_generate_forwards_to_a_provider(gateway, fake_openai, fake_ollama):
    client = ollama_client(gateway)
    out = client.generate(model="openai:test-model", prompt="Describe it.", system="Be brief.", images=[PNG],
                          options={"num_predict": 3})
    assert out.response == "Hello there!" and out.done_reason == "length" and out.eval_count == 3
    assert fake_openai.last.path == "/v1/chat/completions"  # not raw: the provider applies its template
    assert fake_openai.last.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Describe it."},
                                     {"type": "image_url", "image_url": {"url": DATA_URL}}]}]
    raw = "".join(p.response for p in client.generate(model="ollama:phi3.5", prompt="Once upon", raw=True,
                                                      stream=True))
    assert raw == REPLY
    assert fake_ollama.last.path == "/api/generate" and fake_ollama.last.body["prompt"] == "Once upon"
    completion = client.generate(model="openai:test-model", prompt="Once upon", raw=True)
    assert completion.response == REPLY and fake_openai.last.path == "/v1/completions"
    assert completion.context is None  # a provider model has no token context to give back


def test_ollama_routes_load_a_provider_model_without_calling_it(gateway, fake_openai):
    loaded = httpx.post(f"{gateway.base}/api/chat", json={"model": "openai:test-model", "messages": []}, timeout=10)
    assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load"
    assert fake_openai.requests == []


@pytest.mark.parametrize("body, param", [
    ({"model": "openai:test-model", "messages": [{"role": "user", "content": "Hi"}], "logprobs": True}, "logprobs"),
    ({"model": "openai:test-model", "prompt": "Hi", "context": [1, 2, 3]}, "context"),
    ({"model": "openai:test-model", "prompt": "Hi", "raw": True, "images": [PNG_BASE64]}, "images"),
    ({"model": "openai:test-model", "messages": [{"role": "user", "content": "Hi", "images": ["not base64!"]}]},
     "messages[0].images[0]"),
    ({"model": "openai:test-model", "messages": [{"role": "user", "content": "Hi",
                                                   "images": ["aGVsbG8="]}]},
     "messages[0].images[0]"),
])
def test_ollama_routes_refuse_what_cannot_be_forwarded(gateway, fake_openai, body, param):
    path = "/api/chat" if "messages" in body else "/api/generate"
    response = httpx.post(f"{gateway.base}{path}", json={**body, "stream": False}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(param)
    assert fake_openai.requests == []


def test_ollama_stream_upstream_refusal_is_a_status(gateway, fake_ollama):
    with pytest.raises(ollama.ResponseError) as err:
        list(ollama_client(gateway).chat(model="ollama:unknown", messages=[{"role": "user", "content": "Hi"}],
                                         stream=True))
    assert err.value.status_code == 404 and "unknown" in err.value.error


def test_ollama_stream_error_after_start_is_a_line(gateway, fake_ollama):
    from fake_providers import StreamError

    fake_ollama.queue(StreamError(after=2, message="the model crashed"))
    with httpx.stream("POST", f"{gateway.base}/api/chat", timeout=10,
                      json={"model": "ollama:phi3.5", "messages": [{"role": "user", "content": "Hi"}]}) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["message"]["content"] for line in lines[:2]] == PIECES[:2]
    assert "the model crashed" in lines[-1]["error"]
