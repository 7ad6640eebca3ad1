"""`POST /v1/responses` (OpenAI's Responses API) through the real `openai` client's
`client.responses`, on the real SmolLM2; and the OpenAI fields real clients send that change
nothing here. Answers are checked against /v1/chat/completions on the same messages (greedy)."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

QUESTION = "What is 2 + 2?"
BRIEF = "Answer in one short sentence."


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)


def chat_text(client, messages, max_tokens=40) -> str:
    out = client.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=max_tokens)
    return out.choices[0].message.content


def test_text_input_with_instructions_answers_like_chat_completions(client):
    response = client.responses.create(model="smollm2", input=QUESTION, instructions=BRIEF, temperature=0,
                                       max_output_tokens=40)
    expected = chat_text(client, [{"role": "system", "content": BRIEF}, {"role": "user", "content": QUESTION}])
    assert response.output_text == expected and expected.strip()
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.input_tokens > 10 and 0 < response.usage.output_tokens <= 40
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_item_input_and_a_length_limit_is_incomplete(client):
    items = [{"role": "developer", "content": BRIEF},
             {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    response = client.responses.create(model="smollm2", input=items, temperature=0, max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3
    expected = chat_text(client, [{"role": "system", "content": BRIEF}, {"role": "user", "content": QUESTION}], 3)
    assert response.output_text == expected


def test_stream_events_join_to_the_whole_answer(client):
    whole = client.responses.create(model="smollm2", input=QUESTION, temperature=0, max_output_tokens=30)
    events = list(client.responses.create(model="smollm2", input=QUESTION, temperature=0, max_output_tokens=30,
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def test_previous_response_id_continues_the_stored_conversation(client):
    first = client.responses.create(model="smollm2", input="My name is Ada.", temperature=0, max_output_tokens=20)
    second = client.responses.create(model="smollm2", input="What is my name?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=20)
    expected = chat_text(client, [{"role": "user", "content": "My name is Ada."},
                                  {"role": "assistant", "content": first.output_text},
                                  {"role": "user", "content": "What is my name?"}], 20)
    assert second.output_text == expected and second.previous_response_id == first.id
    assert client.responses.retrieve(second.id).output_text == second.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_store_false_is_not_found_later_and_unknown_ids_are_a_400(client):
    unstored = client.responses.create(model="smollm2", input=QUESTION, store=False, temperature=0,
                                       max_output_tokens=2)
    for response_id in (unstored.id, "resp_nope"):
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="smollm2", input="And then?", previous_response_id=response_id)
        assert info.value.body["param"] == "previous_response_id" and response_id in info.value.body["message"]


@pytest.mark.parametrize("kwargs,param", [
    ({"tools": [{"type": "computer_use_preview", "display_width": 800, "display_height": 600,
                 "environment": "linux"}]}, "tools[0].type"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0]"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"$ref": "#/nope"}}}}, "text.format.schema"),
])
def test_what_cannot_run_is_a_400_naming_the_field(client, kwargs, param):
    body = {"model": "smollm2", "input": QUESTION, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(**body)
    assert info.value.body["param"] == param


def test_unknown_model_and_a_too_long_prompt(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input=QUESTION)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="smollm2", input="word " * 2100, max_output_tokens=10)
    assert "max_output_tokens" in info.value.body["message"] or "context" in info.value.body["message"]


def test_fields_clients_send_that_change_nothing_are_accepted(client, server):
    extras = {"metadata": {"app": "x"}, "store": True, "user": "u-1", "service_tier": "auto",
              "prediction": {"type": "content", "content": "4"}, "reasoning_effort": "low",
              "safety_identifier": "s", "prompt_cache_key": "k"}
    out = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                         temperature=0, max_tokens=20, **extras)
    assert out.choices[0].message.content == chat_text(client, [{"role": "user", "content": QUESTION}], 20)
    response = client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=2, metadata={"a": "b"},
                                       user="u", service_tier="auto", truncation="disabled", include=[])
    assert response.metadata == {"a": "b"}
    # a field nobody defines is still refused, as OpenAI refuses it
    bad = httpx.post(f"{server.base}/v1/chat/completions", json={"model": "smollm2", "messages": [
        {"role": "user", "content": "hi"}], "no_such_field": 1}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "no_such_field"
