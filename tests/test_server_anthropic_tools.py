"""Tool use and structured output on `POST /v1/messages` through the real `anthropic` client, on
the real SmolLM2. With tool_choice ``any`` / ``tool`` the output is constrained, so the weak model's
call is always well-formed; what it is fed back (tool_use / tool_result) must be the prompt the
OpenAI route builds from the same conversation, so the greedy answers match /v1/chat/completions."""

from __future__ import annotations

import json

import anthropic
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
TOOLS = [{"name": "get_weather", "description": "Current weather of a city", "input_schema": WEATHER},
         {"name": "add", "description": "Add two integers", "input_schema": ADD}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in TOOLS]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = {"temperature": 0}  # anthropic-sdk 2.x sends sampling fields only through extra_body
ONE_CALL = {"type": "any", "disable_parallel_tool_use": True}


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.base, api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=180)


def create(client, **kwargs):
    body = {"model": "smollm2", "max_tokens": 60, "messages": QUESTION, "tools": TOOLS, "extra_body": GREEDY,
            **kwargs}
    return client.messages.create(**body)


def tool_uses(message):
    return [b for b in message.content if b.type == "tool_use"]


def test_a_forced_call_and_its_result_round_trip_like_chat_completions(client, oai):
    called = create(client, tool_choice=ONE_CALL)
    assert called.stop_reason == "tool_use" and called.stop_sequence is None
    [use] = tool_uses(called)
    assert [b.type for b in called.content] == ["tool_use"]
    assert use.id.startswith("toolu_") and use.name in SCHEMAS
    jsonschema.validate(use.input, SCHEMAS[use.name])

    result = {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "18 degrees"}]}
    history = [*QUESTION, {"role": "assistant", "content": called.content}, {"role": "user", "content": [result]}]
    as_openai = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": use.name, "arguments": json.dumps(use.input)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]

    def chat():
        return oai.chat.completions.create(model="smollm2", temperature=0, max_tokens=30, tools=OPENAI_TOOLS,
                                           tool_choice="none", messages=as_openai)

    # A prompt's first prefill and a prefill from the prefix cache can differ in the last bits
    # of the logits (a near tie flips the greedy token): compare answers that both reuse the cache.
    chat()
    final = create(client, max_tokens=30, tool_choice={"type": "none"}, messages=history)
    same = chat()
    assert not tool_uses(final) and final.content[0].text.strip()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == same.usage.prompt_tokens
    assert final.content[0].text == same.choices[0].message.content
    with client.messages.stream(model="smollm2", max_tokens=30, messages=history, tools=TOOLS, extra_body=GREEDY,
                                tool_choice={"type": "none"}) as stream:
        assert "".join(stream.text_stream) == final.content[0].text


def test_streamed_call_events_join_to_the_whole_call(client):
    whole = tool_uses(create(client, tool_choice={"type": "tool", "name": "get_weather",
                                                  "disable_parallel_tool_use": True}))[0]
    events = list(create(client, tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
                         stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    starts = [e for e in events if e.type == "content_block_start"]
    assert len(starts) == 1 and starts[0].index == 0
    block = starts[0].content_block
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input == {}
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert deltas and all(d.type == "input_json_delta" for d in deltas)
    assert json.loads("".join(d.partial_json for d in deltas)) == whole.input
    assert events[-2].delta.stop_reason == "tool_use" and events[-2].usage.output_tokens > 0
    with client.messages.stream(model="smollm2", max_tokens=60, messages=QUESTION, tools=TOOLS, extra_body=GREEDY,
                                tool_choice=ONE_CALL) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [b.input for b in tool_uses(final)] == [whole.input]
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens > 100  # the tools are in the prompt


def test_named_tool_and_parallel_use_disabled(client):
    named = create(client, tool_choice={"type": "tool", "name": "add", "disable_parallel_tool_use": True})
    [use] = tool_uses(named)
    assert use.name == "add" and named.stop_reason == "tool_use"
    jsonschema.validate(use.input, ADD)
    # Parallel use allowed: the weak model repeats its call until max_tokens; disabled: exactly one.
    for choice in ({"type": "any", "disable_parallel_tool_use": True},
                   {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}):
        assert len(tool_uses(create(client, max_tokens=120, tool_choice=choice))) == 1


def test_tool_choice_none_and_auto(client):
    plain = client.messages.create(model="smollm2", max_tokens=30, messages=QUESTION, extra_body=GREEDY)
    none = create(client, max_tokens=30, tool_choice={"type": "none"})
    assert not tool_uses(none) and none.content[0].text == plain.content[0].text  # no tools in the prompt
    hello = create(client, max_tokens=30, messages=[{"role": "user", "content": "Hi!"}], tool_choice={"type": "auto"})
    assert not tool_uses(hello) and hello.content[0].text and hello.stop_reason in ("end_turn", "max_tokens")
    # Under auto the model opens a call itself when the user writes the trigger; from there on
    # the call is constrained, whole or streamed.
    ask = [{"role": "user", "content": "<tool_call> get_weather Paris"}]
    for stream in (False, True):
        if stream:
            with client.messages.stream(model="smollm2", max_tokens=60, messages=ask, tools=TOOLS, extra_body=GREEDY,
                                        tool_choice={"type": "auto", "disable_parallel_tool_use": True}) as s:
                message = s.get_final_message()
        else:
            message = create(client, messages=ask, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
        assert message.stop_reason == "tool_use", message
        for use in tool_uses(message):
            jsonschema.validate(use.input, SCHEMAS[use.name])
        assert "<tool_call>" not in "".join(b.text for b in message.content if b.type == "text")


def test_tool_results_as_text_and_as_errors(client):
    use = {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 2}}
    for content, is_error in (("4", False), ("division by zero", True)):
        message = create(client, max_tokens=20, tool_choice={"type": "none"}, messages=[
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me add."}, use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": content,
                                          "is_error": is_error},
                                         {"type": "text", "text": "So?"}]}])
        assert message.content[0].text.strip()
    counted = client.messages.count_tokens(model="smollm2", messages=QUESTION, tools=TOOLS)
    bare = client.messages.count_tokens(model="smollm2", messages=QUESTION)
    assert counted.input_tokens > bare.input_tokens + 50  # the tools' description is part of the prompt


def test_a_call_cut_by_max_tokens_stops_with_max_tokens(client):
    cut = create(client, tool_choice=ONE_CALL).usage.output_tokens - 3  # stops inside the input
    whole = create(client, max_tokens=cut, tool_choice=ONE_CALL)
    assert whole.stop_reason == "max_tokens" and not tool_uses(whole)  # half a call is not a call to run
    events = list(create(client, max_tokens=cut, tool_choice=ONE_CALL, stream=True))
    assert events[-2].delta.stop_reason == "max_tokens"
    assert [e.content_block.type for e in events if e.type == "content_block_start"] == ["tool_use"]


def test_output_config_format_constrains_the_reply_to_the_schema(client):
    schema = VERDICT
    message = client.messages.create(model="smollm2", max_tokens=40, extra_body={"temperature": 0.8},
                                     messages=[{"role": "user", "content": "Is the sky blue?"}],
                                     output_config={"format": {"type": "json_schema", "schema": schema}})
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), schema)
    # The SDK's own helper: a pydantic type, its schema sent as output_config.format, parsed back.
    parsed = client.messages.parse(model="smollm2", max_tokens=60, extra_body=GREEDY, output_format=Country,
                                   messages=[{"role": "user", "content": "Which country is Paris in?"}])
    assert isinstance(parsed.parsed_output, Country)


CALL = {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 1, "b": 2}}


@pytest.mark.parametrize("changes,fragment", [
    ({"tool_choice": {"type": "tool", "name": "send_email"}}, "tool_choice.name: names no tool: 'send_email'"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "any"}, "tools": None}, "tool_choice: type 'any' needs tools"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type: 'web_search_20250305' is a server tool"),
    ({"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}]},
     "tools.0.input_schema"),
    ({"tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "tools.0.input_schema.type"),
    ({"tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}, "tools.0.name"),
    ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
    ({"tools": [TOOLS[1], TOOLS[1]]}, "unique"),
    ({"messages": [*QUESTION, {"role": "assistant", "content": [CALL]}, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_other", "content": "3"}]}]}, "messages.2.content.0.tool_use_id"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "3"}]}]},
     "messages.0.content.0.tool_use_id"),
    ({"messages": [{"role": "user", "content": [CALL]}]}, "messages.0.content.0.type"),
    ({"tools": None, "output_config": {"format": {"type": "json_schema", "schema": {"type": "array",
                                                                                   "uniqueItems": True}}}},
     "output_config.format.schema"),
    ({"tools": None, "output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "output_config.format"),
])
def test_bad_tool_input_is_one_400_in_anthropics_shape(server, changes, fragment):
    body = {"model": "smollm2", "max_tokens": 5, "messages": QUESTION, "tools": TOOLS, **changes}
    body = {k: v for k, v in body.items() if v is not None}
    response = httpx.post(f"{server.base}/v1/messages", json=body, timeout=60)
    assert response.status_code == 400, response.text
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert fragment in data["error"]["message"], data
