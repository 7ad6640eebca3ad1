"""Tool calls through a gateway: one `slm serve` forwards a provider model (``openai:smollm2``, the
other server's OpenAI API) on its Anthropic and Responses routes. The provider's calls come back
parsed, and must be the calls the local model makes on the same request, whole and streamed."""

from __future__ import annotations

import anthropic
import openai
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.slow

ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"], "additionalProperties": False}
QUESTION = "What is 2 + 3?"


@pytest.fixture(scope="module")
def gateway(server):
    proc = ServerProcess("--parallel", "1", env={"OPENAI_BASE_URL": f"{server.base}/v1", "OPENAI_API_KEY": "unused"})
    yield proc
    proc.stop()


def test_anthropic_route_forwards_tool_calls(server, gateway):
    def ask(base, model, stream=False):
        client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=180)
        kwargs = dict(model=model, max_tokens=60, messages=[{"role": "user", "content": QUESTION}],
                      tools=[{"name": "add", "description": "Add two integers", "input_schema": ADD}],
                      tool_choice={"type": "tool", "name": "add", "disable_parallel_tool_use": True},
                      extra_body={"temperature": 0})
        if not stream:
            return client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as events:
            return events.get_final_message()

    local = ask(server.base, "smollm2")
    for stream in (False, True):
        remote = ask(gateway.base, "openai:smollm2", stream)
        assert remote.stop_reason == local.stop_reason == "tool_use"
        assert [(b.type, b.name, b.input) for b in remote.content if b.type == "tool_use"] == \
            [(b.type, b.name, b.input) for b in local.content if b.type == "tool_use"]


def test_responses_route_forwards_function_calls(server, gateway):
    def ask(base, model, stream=False):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=180)
        kwargs = dict(model=model, input=QUESTION, temperature=0, max_output_tokens=60, parallel_tool_calls=False,
                      tools=[{"type": "function", "name": "add", "description": "Add two integers", "parameters": ADD}],
                      tool_choice="required")
        if not stream:
            return client.responses.create(**kwargs)
        with client.responses.stream(**kwargs) as events:
            return events.get_final_response()

    local = [(i.name, i.arguments) for i in ask(server.base, "smollm2").output if i.type == "function_call"]
    assert local
    for stream in (False, True):
        remote = ask(gateway.base, "openai:smollm2", stream)
        assert [(i.name, i.arguments) for i in remote.output if i.type == "function_call"] == local
