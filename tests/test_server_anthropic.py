"""`POST /v1/messages` (Anthropic's Messages API) through the real `anthropic` client, on the real
SmolLM2. Answers are checked against /v1/chat/completions on the same messages (greedy)."""

from __future__ import annotations

import base64

import anthropic
import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
BRIEF = "Answer in one short sentence."
GREEDY = {"temperature": 0}  # anthropic-sdk 2.x sends sampling fields only through extra_body
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.base, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)


def chat(oai, messages, max_tokens=40, **kwargs):
    return oai.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=max_tokens,
                                       **kwargs).choices[0]


def test_system_and_messages_answer_like_chat_completions(client, oai):
    message = client.messages.create(model="smollm2", max_tokens=40, system=BRIEF, messages=QUESTION, extra_body=GREEDY)
    expected = chat(oai, [{"role": "system", "content": BRIEF}, *QUESTION])
    assert message.type == "message" and message.role == "assistant" and message.model == "smollm2"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == expected.message.content
    assert message.stop_reason == ("max_tokens" if expected.finish_reason == "length" else "end_turn")
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens > 10
    assert 0 < message.usage.output_tokens <= 40


def test_text_blocks_system_blocks_and_max_tokens(client, oai):
    message = client.messages.create(
        model="smollm2", max_tokens=3, extra_body={"temperature": 0, "top_k": 1, "top_p": 0.5},
        system=[{"type": "text", "text": BRIEF}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3
    assert message.content[0].text == chat(oai, [{"role": "system", "content": BRIEF}, *QUESTION], 3).message.content


def test_stop_sequences_name_the_one_that_stopped(client, oai):
    whole = chat(oai, QUESTION).message.content
    word = whole.split()[1]  # a word from the middle of the greedy answer
    message = client.messages.create(model="smollm2", max_tokens=40, messages=QUESTION, extra_body=GREEDY,
                                     stop_sequences=["never-appears", word])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == word
    assert message.content[0].text == whole[: whole.index(word)]


def test_stream_events_and_the_helper_join_to_the_whole_answer(client):
    whole = client.messages.create(model="smollm2", max_tokens=30, messages=QUESTION, extra_body=GREEDY)
    events = list(client.messages.create(model="smollm2", max_tokens=30, messages=QUESTION, extra_body=GREEDY,
                                         stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert deltas == whole.content[0].text
    assert events[-2].delta.stop_reason == whole.stop_reason and events[-2].usage.output_tokens == whole.usage.output_tokens
    with client.messages.stream(model="smollm2", max_tokens=30, messages=QUESTION, extra_body=GREEDY) as stream:
        assert "".join(stream.text_stream) == whole.content[0].text
        assert stream.get_final_message().stop_reason == whole.stop_reason


def test_count_tokens_is_the_prompt_the_answer_was_given(client):
    message = client.messages.create(model="smollm2", max_tokens=1, extra_body=GREEDY, system=BRIEF, messages=QUESTION)
    counted = client.messages.count_tokens(model="smollm2", system=BRIEF, messages=QUESTION)
    assert counted.input_tokens == message.usage.input_tokens + message.usage.cache_read_input_tokens


def test_images_go_where_chat_completions_sends_them(client, oai):
    """A local text model refuses an image by name, on both APIs, with the same message."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="smollm2", max_tokens=5, messages=[
            {"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}])
    with pytest.raises(openai.BadRequestError) as same:
        oai.chat.completions.create(model="smollm2", max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "text", "text": "What is this?"}]}])
    assert info.value.body["error"]["message"] == same.value.body["message"]
    assert "image" in info.value.body["error"]["message"]


@pytest.mark.parametrize("body,status,fragment", [
    ({"model": "smollm2", "messages": QUESTION}, 400, "max_tokens"),
    ({"model": "smollm2", "max_tokens": 5, "messages": []}, 400, "messages"),
    ({"model": "smollm2", "max_tokens": 5, "messages": QUESTION, "temperature": 1.5}, 400, "temperature"),
    ({"model": "smollm2", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, 400, "role"),
    ({"model": "smollm2", "max_tokens": 5, "messages": QUESTION, "tools": [{"name": "f"}]}, 400, "tools"),
    ({"model": "smollm2", "max_tokens": 5000, "messages": QUESTION}, 400, "max_tokens"),
    ({"model": "no-such-model", "max_tokens": 5, "messages": QUESTION}, 404, "no-such-model"),
])
def test_errors_come_in_anthropics_shape(server, body, status, fragment):
    response = httpx.post(f"{server.base}/v1/messages", json=body, timeout=60)
    assert response.status_code == status, response.text
    data = response.json()
    assert data["type"] == "error" and set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert fragment in data["error"]["message"]


def test_the_client_raises_its_own_exceptions(client):
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=5, messages=QUESTION)
    assert info.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="smollm2", max_tokens=5, messages=QUESTION, extra_body={"top_k": -1})
