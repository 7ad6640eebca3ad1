"""Structured output and tool calls through `slm serve` with the real `openai` and `ollama` clients."""

from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pytest

pytestmark = pytest.mark.slow

WEATHER_ARGS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                 "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
                                      "parameters": WEATHER_ARGS}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"], "additionalProperties": False}}},
]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
LT = 44  # SmolLM2's "<": a bias on it makes the model open a call by itself under tool_choice auto


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=180)


def check_calls(calls, names=None):
    assert calls, "no tool call"
    for call in calls:
        assert call.id and call.type == "function"
        assert names is None or call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


def stream_calls(chunks):
    """(content, {index: (id, name, arguments)}, finish_reason) joined from stream chunks."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            if delta.id:
                assert delta.index not in calls and delta.function.name
                calls[delta.index] = [delta.id, delta.function.name, ""]
            calls[delta.index][2] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, calls, finish


def test_required_and_named_tool_choice_give_valid_calls(client):
    for choice, names in (("required", {"get_weather", "add"}),
                          ({"type": "function", "function": {"name": "add"}}, {"add"})):
        out = client.chat.completions.create(model="smollm2", messages=WEATHER_QUESTION, tools=TOOLS,
                                             tool_choice=choice, parallel_tool_calls=False, temperature=0,
                                             max_tokens=60)
        choice0 = out.choices[0]
        assert choice0.finish_reason == "tool_calls" and choice0.message.content is None
        assert len(choice0.message.tool_calls) == 1
        check_calls(choice0.message.tool_calls, names)


def test_streamed_tool_call_deltas_join_to_the_whole_call(client):
    kwargs = dict(model="smollm2", messages=WEATHER_QUESTION, tools=TOOLS, tool_choice="required",
                  parallel_tool_calls=False, temperature=0, max_tokens=60)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    content, calls, finish = stream_calls(client.chat.completions.create(**kwargs, stream=True))
    assert content == "" and finish == "tool_calls" and list(calls) == [0]
    _, name, arguments = calls[0]
    assert (name, arguments) == (whole.function.name, whole.function.arguments)


def test_auto_answers_in_text_or_with_a_constrained_call(client):
    text = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi!"}],
                                          tools=TOOLS, temperature=0, max_tokens=30).choices[0]
    assert text.message.tool_calls is None and text.message.content
    for stream in (False, True):
        out = client.chat.completions.create(model="smollm2", messages=WEATHER_QUESTION, tools=TOOLS,
                                             tool_choice="auto", parallel_tool_calls=False, temperature=0,
                                             max_tokens=60, logit_bias={str(LT): 5}, stream=stream)
        if stream:
            _, calls, finish = stream_calls(out)
            assert finish == "tool_calls" and len(calls) == 1
            _, name, arguments = calls[0]
            jsonschema.validate(json.loads(arguments), PARAMETERS[name])
        else:
            assert out.choices[0].finish_reason == "tool_calls"
            check_calls(out.choices[0].message.tool_calls)


def test_tool_results_in_the_history_render_and_answer(client):
    history = WEATHER_QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    out = client.chat.completions.create(model="smollm2", messages=history, tools=TOOLS, tool_choice="none",
                                         temperature=0, max_tokens=30)
    assert out.choices[0].message.content and out.choices[0].message.tool_calls is None


def test_json_schema_response_format_and_length_inside_the_structure(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    out = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Biggest city?"}],
                                         temperature=0.9, seed=1, max_tokens=60, response_format=fmt)
    assert out.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(out.choices[0].message.content), schema)
    cut = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Biggest city?"}],
                                         temperature=0, max_tokens=4, response_format=fmt)
    assert cut.choices[0].finish_reason == "length"


def test_structures_that_cannot_be_honoured_are_400_with_the_reason(client):
    bad = [
        (dict(response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "array", "uniqueItems": True}, "strict": True}}), "uniqueItems"),
        (dict(response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"$ref": "#/missing"}}}), "missing"),
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "send_email"}}), "send_email"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]),
         "parameters"),
    ]
    for kwargs, reason in bad:
        with pytest.raises(openai.BadRequestError, match=reason):
            client.chat.completions.create(model="smollm2", messages=WEATHER_QUESTION, max_tokens=5, **kwargs)
    # Without strict, keywords the grammar cannot enforce are ignored (best effort, as OpenAI).
    lenient = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "items": {"type": "integer"}, "maxItems": 3, "uniqueItems": True}}}
    out = client.chat.completions.create(model="smollm2", messages=WEATHER_QUESTION, temperature=0, max_tokens=30,
                                         response_format=lenient)
    assert isinstance(json.loads(out.choices[0].message.content), list)


def test_ollama_tools_and_format_schema(server):
    client = ollama.Client(host=server.base, timeout=180)
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                               "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
              "required": ["answer", "confidence"], "additionalProperties": False}
    out = client.chat(model="smollm2", messages=[{"role": "user", "content": "Is the sky blue?"}], format=schema,
                      options={"temperature": 0.8, "seed": 3, "num_predict": 40})
    jsonschema.validate(json.loads(out.message.content), schema)
    # Ollama has no tool_choice: the model opens the call itself (SmolLM2 does when the user
    # writes the trigger). Complete calls come back as message.tool_calls, arguments as objects.
    # The client sends only the schema keywords its Tool model knows (no maxLength, no
    # additionalProperties): the calls follow that schema.
    ask = [{"role": "user", "content": "<tool_call> get_weather Paris"}]
    for stream in (False, True):
        reply = client.chat(model="smollm2", messages=ask, tools=TOOLS, stream=stream,
                            options={"temperature": 0, "num_predict": 60})
        chunks = list(reply) if stream else [reply]
        calls = [c for chunk in chunks for c in (chunk.message.tool_calls or [])]
        assert calls and "<tool_call>" not in "".join(chunk.message.content or "" for chunk in chunks)
        for call in calls:
            jsonschema.validate(dict(call.function.arguments), as_ollama_client_sends(PARAMETERS[call.function.name]))


def as_ollama_client_sends(schema):
    dropped = ("additionalProperties", "maxLength")
    if isinstance(schema, dict):
        return {k: as_ollama_client_sends(v) for k, v in schema.items() if k not in dropped}
    return schema
