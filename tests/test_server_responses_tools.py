"""Function calling and structured output on `POST /v1/responses` through the real `openai`
client's `client.responses`, on the real SmolLM2. Forced calls (tool_choice required or named)
are constrained, so the weak model's call is always well-formed; function_call /
function_call_output items must feed the model the prompt /v1/chat/completions builds from the
same conversation, so greedy answers match."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from output_schemas import VERDICT, Country

pytestmark = pytest.mark.slow

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather of a city",
          "parameters": WEATHER, "strict": True},
         {"type": "function", "name": "add", "description": "Add two integers", "parameters": ADD, "strict": True}]
CHAT_TOOLS = [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")}}
              for t in TOOLS]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}
QUESTION = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=180)


def create(client, **kwargs):
    body = {"model": "smollm2", "input": QUESTION, "tools": TOOLS, "temperature": 0, "max_output_tokens": 60,
            **kwargs}
    return client.responses.create(**body)


def calls(response):
    return [item for item in response.output if item.type == "function_call"]


def test_a_forced_call_and_its_output_round_trip_like_chat_completions(client):
    called = create(client, tool_choice="required", parallel_tool_calls=False)
    assert called.status == "completed" and [item.type for item in called.output] == ["function_call"]
    [call] = calls(called)
    assert call.call_id and call.id and call.status == "completed" and call.name in SCHEMAS
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    assert called.tool_choice == "required" and called.parallel_tool_calls is False
    assert [t.name for t in called.tools] == ["get_weather", "add"]

    output = {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees"}
    items = [{"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True), output]
    as_chat = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "18 degrees"}]

    def chat():
        return client.chat.completions.create(model="smollm2", messages=as_chat, tools=CHAT_TOOLS, tool_choice="none",
                                              temperature=0, max_tokens=30)

    # A prompt's first prefill and one from the prefix cache can differ in the last bits of the
    # logits (a near tie flips the greedy token): compare answers that both reuse the cache.
    chat()
    final = create(client, input=items, tool_choice="none", max_output_tokens=30)
    same = chat()
    assert not calls(final) and final.output_text.strip()
    assert final.usage.input_tokens == same.usage.prompt_tokens
    assert final.output_text == same.choices[0].message.content
    streamed = create(client, input=items, tool_choice="none", max_output_tokens=30, stream=True)
    assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == final.output_text
    # The same turn through previous_response_id: the stored answer holds the call.
    chained = create(client, input=[output], previous_response_id=called.id, tool_choice="none",
                     max_output_tokens=30)
    assert chained.output_text == final.output_text


def test_streamed_call_events_join_to_the_whole_call(client):
    kwargs = dict(tool_choice={"type": "function", "name": "get_weather"})
    whole = calls(create(client, **kwargs))[0]
    events = list(create(client, **kwargs, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-4:] == ["response.function_call_arguments.delta", "response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = events[2].item
    assert added.type == "function_call" and added.name == "get_weather" and added.arguments == ""
    assert added.status == "in_progress"
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert all(e.item_id == added.id and e.output_index == 0 for e in deltas)
    arguments_done, done = events[-3], events[-2]
    assert arguments_done.name == "get_weather" and arguments_done.item_id == added.id
    assert "".join(e.delta for e in deltas) == arguments_done.arguments == done.item.arguments == whole.arguments
    assert done.item.call_id == added.call_id and done.item.status == "completed"
    assert [c.arguments for c in calls(events[-1].response)] == [whole.arguments]
    with client.responses.stream(model="smollm2", input=QUESTION, tools=TOOLS, temperature=0, max_output_tokens=60,
                                 **kwargs) as stream:
        final = stream.get_final_response()
    assert [(c.name, c.arguments) for c in calls(final)] == [("get_weather", whole.arguments)]


def test_named_choice_and_parallel_calls(client):
    named = create(client, tool_choice={"type": "function", "name": "add"})
    assert [c.name for c in calls(named)] == ["add"]
    jsonschema.validate(json.loads(calls(named)[0].arguments), ADD)
    # Parallel calls allowed: the weak model repeats its call until the limit; disabled: exactly one.
    assert len(calls(create(client, tool_choice="required", parallel_tool_calls=False, max_output_tokens=120))) == 1
    parallel = create(client, tool_choice="required", max_output_tokens=120)
    assert len(calls(parallel)) >= 2 and parallel.status == "incomplete"


def test_tool_choice_none_and_auto(client):
    plain = client.responses.create(model="smollm2", input=QUESTION, temperature=0, max_output_tokens=30)
    none = create(client, tool_choice="none", max_output_tokens=30)
    assert not calls(none) and none.output_text == plain.output_text  # no tools in the prompt
    hello = create(client, input="Hi!", max_output_tokens=30)
    assert not calls(hello) and hello.output_text
    # Under auto the model opens a call itself when the user writes the trigger; from there on
    # the call is constrained, whole or streamed.
    ask = "<tool_call> get_weather Paris"
    whole = create(client, input=ask, parallel_tool_calls=False)
    assert calls(whole) and "<tool_call>" not in whole.output_text
    for call in calls(whole):
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    with client.responses.stream(model="smollm2", input=ask, tools=TOOLS, temperature=0, max_output_tokens=60,
                                 parallel_tool_calls=False) as stream:
        streamed = stream.get_final_response()
    assert [(c.name, c.arguments) for c in calls(streamed)] == [(c.name, c.arguments) for c in calls(whole)]


def test_a_call_cut_by_max_output_tokens_is_incomplete(client):
    full = create(client, tool_choice="required", parallel_tool_calls=False)
    cut = full.usage.output_tokens - 3  # stops inside the arguments
    whole = create(client, tool_choice="required", max_output_tokens=cut)
    assert whole.status == "incomplete" and not calls(whole)  # half a call is not a call to run
    events = list(create(client, tool_choice="required", max_output_tokens=cut, stream=True))
    final = events[-1].response
    assert events[-1].type == "response.incomplete" and [c.status for c in calls(final)] == ["incomplete"]
    assert final.output_text == ""


def test_text_format_json_schema_and_json_object(client):
    schema = VERDICT
    fmt = {"type": "json_schema", "name": "verdict", "schema": schema, "strict": True}
    response = client.responses.create(model="smollm2", input="Is the sky blue?", temperature=0.8,
                                       max_output_tokens=40, text={"format": fmt})
    assert response.status == "completed" and response.text.format.type == "json_schema"
    jsonschema.validate(json.loads(response.output_text), schema)
    streamed = "".join(e.delta for e in client.responses.create(
        model="smollm2", input="Is the sky blue?", temperature=0, max_output_tokens=40, text={"format": fmt},
        stream=True) if e.type == "response.output_text.delta")
    jsonschema.validate(json.loads(streamed), schema)
    as_object = client.responses.create(model="smollm2", input="Describe Paris in JSON.", temperature=0,
                                        max_output_tokens=40, text={"format": {"type": "json_object"}})
    if as_object.status == "completed":
        assert isinstance(json.loads(as_object.output_text), dict)
    else:
        assert as_object.output_text.startswith("{")
    # The SDK's own helper: a pydantic type sent as a strict json_schema, parsed back.
    parsed = client.responses.parse(model="smollm2", input="Which country is Paris in?", temperature=0,
                                    max_output_tokens=60, text_format=Country)
    assert isinstance(parsed.output_parsed, Country)


CALL = {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 1, "b": 2}'}


@pytest.mark.parametrize("changes,param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"name": "f"}]}, "tools[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "nonsense"}}]}, "tools[0].parameters"),
    ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
    ({"tool_choice": {"type": "function", "name": "send_email"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"tool_choice": "required", "tools": None}, "tool_choice"),
    ({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "3"}]}, "input[0].call_id"),
    ({"input": [CALL, {"type": "function_call_output", "call_id": "call_2", "output": "3"}]}, "input[1].call_id"),
    ({"input": [{**CALL, "arguments": "not json"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call", "name": "add", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "array", "uniqueItems": True},
                          "strict": True}}, "tools": None}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}, "tools": None}, "text.format.schema"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format"),
])
def test_bad_tool_input_is_one_400_naming_the_field(server, changes, param):
    body = {"model": "smollm2", "input": QUESTION, "tools": TOOLS, "max_output_tokens": 5, **changes}
    body = {k: v for k, v in body.items() if v is not None}
    response = httpx.post(f"{server.base}/v1/responses", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert error["message"].startswith(param)
