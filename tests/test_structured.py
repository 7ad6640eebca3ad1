"""Structured output on the real SmolLM2: JSON Schemas, json_object, regexes and tool calls are
enforced token by token (llguidance), in the batching engine and through the Python API."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest

from slmkit import SamplingParams
from slmkit.engine.engine import Engine, Request
from slmkit.errors import InvalidParameterError
from slmkit.sampling import Sampler, make_constraint
from slmkit.text.tool_calls import ToolCallStream, parse_tool_calls

SCHEMAS = [
    {  # nested objects, optional fields, bounded integers
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                         "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["city"], "additionalProperties": False},
        },
        "required": ["name", "age"], "additionalProperties": False,
    },
    {  # arrays with min/maxItems of enums
        "type": "object",
        "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                  "minItems": 1, "maxItems": 3}},
        "required": ["colors"], "additionalProperties": False,
    },
    {  # numbers with bounds, booleans
        "type": "object",
        "properties": {"price": {"type": "number", "minimum": 0.5, "maximum": 99.5},
                       "in_stock": {"type": "boolean"}},
        "required": ["price", "in_stock"], "additionalProperties": False,
    },
    {  # string patterns, a top-level array
        "type": "array", "minItems": 2, "maxItems": 2,
        "items": {"type": "string", "pattern": "^[A-Z][a-z]{1,8}$"},
    },
    {  # enum at the top, const
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "version": {"const": 2}},
        "required": ["answer", "version"], "additionalProperties": False,
    },
]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def engine_runner(llm):
    from slmkit.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(llm.model.path)
    runner = model.create_runner(context_length=1024, max_sequences=10, unified_kv=False)
    yield model, runner
    runner.close()
    model.close()


def fresh_engine(engine_runner, **options) -> Engine:
    """An engine on the shared runner, whose slots may still hold an earlier engine's KV."""
    model, runner = engine_runner
    for slot in range(runner.max_sequences):
        runner.free(slot)
    return Engine(runner, model.tokenizer, **options)


def run_engine(engine, requests):
    """{request_id: (text, token ids, finish_reason)} with every request submitted at once."""
    texts = {r.request_id: [] for r in requests}
    ids = {r.request_id: [] for r in requests}
    finish = {}

    def sink(out):
        texts[out.request_id].append(out.text)
        ids[out.request_id].extend(out.token_ids)
        if out.finished:
            assert out.error is None, out.error
            finish[out.request_id] = out.finish_reason

    for request in requests:
        engine.add_request(request, sink)
    engine.run_until_done()
    return {k: ("".join(texts[k]), ids[k], finish[k]) for k in texts}


def chat_ids(llm, text, **template):
    return llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": text}], **template))


@pytest.mark.slow
def test_sampled_generations_validate_against_their_schemas(llm, engine_runner):
    engine = fresh_engine(engine_runner)
    prompt = chat_ids(llm, "Answer with JSON.")
    results = {}
    for s, schema in enumerate(SCHEMAS):  # 5 schemas x 10 seeds = 50 generations, 10 in a batch
        requests = [Request(prompt, SamplingParams(temperature=0.8 + 0.2 * (seed % 2), top_p=0.95, seed=seed,
                                                   max_tokens=96, json_schema=schema), f"s{s}-{seed}")
                    for seed in range(10)]
        results.update({k: (schema, v) for k, v in run_engine(engine, requests).items()})
    assert len(results) == 50
    for key, (schema, (text, _, finish)) in results.items():
        assert finish == "stop", (key, text)
        jsonschema.validate(json.loads(text), schema)
    assert len({text for _, (text, _, _) in results.values()}) > 25  # sampled, not one answer
    assert engine.stats.masked > 0 and engine.stats.forced > 0


@pytest.mark.slow
def test_json_object_parses_and_regex_matches_when_sampled(llm, engine_runner):
    engine = fresh_engine(engine_runner)
    prompt = chat_ids(llm, "Describe a cat.")
    pattern = r"(Yes|No), because [a-z ]{4,30}\."
    requests = [Request(prompt, SamplingParams(temperature=0.9, seed=seed, max_tokens=64,
                                               response_format="json_object"), f"json{seed}") for seed in range(5)]
    requests += [Request(prompt, SamplingParams(temperature=1.0, seed=seed, max_tokens=40, regex=pattern),
                         f"re{seed}") for seed in range(5)]
    for key, (text, _, finish) in run_engine(engine, requests).items():
        if key.startswith("json"):
            # Cut short by max_tokens the object is incomplete and says so ("length"); a finished
            # one is always a JSON object.
            assert finish in ("stop", "length"), key
            if finish == "stop":
                assert isinstance(json.loads(text), dict), text
        else:
            assert finish == "stop" and re.fullmatch(pattern, text), text


@pytest.mark.slow
def test_constrained_and_free_requests_in_one_batch_keep_their_greedy_tokens(llm, engine_runner):
    greedy = SamplingParams(temperature=0, max_tokens=64)
    requests = [
        Request(chat_ids(llm, "What is the capital of France?"), greedy, "free0"),
        Request(chat_ids(llm, "Give me a person."), greedy.updated(json_schema=SCHEMAS[0]), "schema"),
        Request(chat_ids(llm, "Write a haiku."), greedy, "free1"),
        Request(chat_ids(llm, "Is it raining?"), greedy.updated(regex=r"(yes|no)!"), "regex"),
    ]
    together = run_engine(fresh_engine(engine_runner), requests)
    for request in requests:
        alone = run_engine(fresh_engine(engine_runner), [request])
        assert alone[request.request_id][1] == together[request.request_id][1], request.request_id
    jsonschema.validate(json.loads(together["schema"][0]), SCHEMAS[0])


@pytest.mark.slow
def test_fast_forward_gives_the_same_output_in_fewer_forwards(llm, engine_runner):
    schema = {"type": "object", "additionalProperties": False,
              "required": ["customer_identification_number", "preferred_delivery_window_description"],
              "properties": {"customer_identification_number": {"type": "integer", "minimum": 1, "maximum": 9999},
                             "preferred_delivery_window_description": {"type": "string", "maxLength": 16}}}
    request = Request(chat_ids(llm, "Fill in the delivery form."),
                      SamplingParams(temperature=0, max_tokens=80, json_schema=schema), "form")
    runs = {}
    for fast in (False, True):
        engine = fresh_engine(engine_runner, fast_forward=fast)
        runs[fast] = (run_engine(engine, [request])["form"], engine.stats)
    (slow_out, slow_stats), (fast_out, fast_stats) = runs[False], runs[True]
    assert fast_out[0] == slow_out[0] and fast_out[2] == "stop"
    jsonschema.validate(json.loads(fast_out[0]), schema)
    assert fast_stats.forced >= 10 and slow_stats.forced == 0
    assert fast_stats.steps < slow_stats.steps - 8


def test_mask_goes_on_before_top_p_so_truncation_never_empties_the_row(llm):
    """SmolLM2's defaults sample with top_p 0.9: the only token the grammar allows here is far
    outside the nucleus of these logits, and must still be drawn."""
    params = llm.default_params.updated(regex="Z", seed=0)
    assert params.top_p == 0.9
    tokenizer, vocab = llm.tokenizer, llm.runner.vocab_size
    (z,) = tokenizer.encode("Z", add_special=False)
    logits = np.zeros(vocab, dtype=np.float32)
    logits[:100] = 20.0  # the whole nucleus is a hundred other tokens
    for _ in range(5):
        sampler = Sampler(params, vocab, make_constraint(tokenizer, params, vocab))
        assert sampler.sample(logits, [1, 2], 2) == z


def test_tool_calls_through_the_python_api(llm):
    for choice in ("required", "add"):
        params = SamplingParams(temperature=0, max_tokens=60, tools=[WEATHER, ADD], tool_choice=choice,
                                parallel_tool_calls=False)
        out = llm.chat([{"role": "user", "content": "What is the weather in Paris?"}], params)
        assert out.finish_reason == "tool_calls" and len(out.tool_calls) == 1, out
        call = out.tool_calls[0]
        tool = {"get_weather": WEATHER, "add": ADD}[call.name]
        assert choice == "required" or call.name == choice
        jsonschema.validate(json.loads(call.arguments), tool["function"]["parameters"])


def test_auto_constrains_a_call_from_its_trigger_on(llm):
    """With tool_choice auto free text may run until "<tool_call>", then only a valid call may
    follow: in text, mid-text, and never a call-looking text that breaks the schema."""
    params = SamplingParams(tools=[WEATHER, ADD])
    tokenizer, vocab = llm.tokenizer, llm.runner.vocab_size
    for text in ("<tool_call>\n", "Let me check.\n<tool_call>\n"):
        constraint = make_constraint(tokenizer, params, vocab)
        for token in tokenizer.encode(text, add_special=False):
            constraint.accept(token)
        assert tokenizer.decode(constraint.forced_tokens()) == '{"name": "'
        allowed = constraint.allowed()
        assert not allowed[tokenizer.encode("Paris", add_special=False)[0]]
    constraint = make_constraint(tokenizer, params, vocab)
    for token in tokenizer.encode("Just an answer.", add_special=False):
        constraint.accept(token)
    assert constraint.allowed()[tokenizer.special.eos]  # plain text may end


def test_bad_structures_are_refused_with_the_reason():
    cases = [
        (dict(json_schema={"type": "object", "properties": {"a": {"$ref": "#/nope"}}}), "json_schema", "nope"),
        (dict(json_schema={"type": "array", "uniqueItems": True}), "json_schema", "uniqueItems"),
        (dict(regex="a(b"), "regex", "unclosed group"),
        (dict(grammar="start: missing_rule"), "grammar", "missing_rule"),
        (dict(tools=[WEATHER], tool_choice="send_email"), "tool_choice", "send_email"),
        (dict(regex="a", json_schema={"type": "object"}), "regex", "choose one"),
        (dict(num_beams=2, temperature=0, response_format="json_object"), "num_beams", "beam search"),
    ]
    for kwargs, param, reason in cases:
        with pytest.raises(InvalidParameterError, match=reason) as info:
            SamplingParams(**kwargs)
        assert info.value.param == param


def test_gbnf_grammars_are_converted(llm):
    params = SamplingParams(temperature=0, max_tokens=8, grammar='root ::= "yes" | "no"')
    out = llm.chat([{"role": "user", "content": "Is water wet?"}], params)
    assert out.text in ("yes", "no") and out.finish_reason == "stop"


def test_streamed_calls_join_to_the_parsed_ones():
    text = ('Checking.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa}ris", "unit": "celsius"}}\n'
            '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n')
    content, calls = parse_tool_calls(text)
    assert content == "Checking." and [c.name for c in calls] == ["get_weather", "add"]
    assert json.loads(calls[0].arguments) == {"city": "Pa}ris", "unit": "celsius"}
    for step in (1, 2, 5, len(text)):
        stream, streamed, args = ToolCallStream(), "", {}
        for i in range(0, len(text), step):
            piece, deltas = stream.feed(text[i:i + step])
            streamed += piece
            for d in deltas:
                args[d.index] = args.get(d.index, "") + d.arguments
        streamed += stream.finish()
        assert streamed == "Checking." and args == {0: calls[0].arguments, 1: calls[1].arguments}
