"""Hostile inputs: chat templates that try to escape Jinja's sandbox or to run forever or explode,
model names that try to read outside the store, and request text that is not valid Unicode. Each
fails that one call with a clear error (a 400/404 in the API's own shape on the server, which
keeps serving), in bounded time and memory."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest

from slmkit import LLM
from slmkit.errors import InvalidParameterError, InvalidRequestError, ModelLoadError, ModelNotFoundError
from slmkit.store.store import ModelStore, looks_like_path, parse_reference
from slmkit.text.chat_template import BUILTIN_TEMPLATES, ChatTemplate

HI = [{"role": "user", "content": "hi"}]

ESCAPES = {
    "class_mro": "{{ ''.__class__.__mro__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.system('id') }}",
    "joiner_globals": "{{ joiner.__init__.__globals__ }}",
    "namespace_globals": "{{ namespace.__init__.__globals__ }}",
    "self_globals": "{{ self.__init__.__globals__ }}",
    "function_globals": "{{ raise_exception.__globals__ }}",
    "mutate_messages": "{% set _ = messages.append({'role': 'system'}) %}{{ messages }}",
}
EXPLOSIONS = {
    "range_1e9": ("{% for i in range(10**9) %}x{% endfor %}", "as a size"),
    "nested_loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than"),
    # 10^10 characters out: the size budget or the time budget, whichever the machine reaches first
    "nested_output": ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                      ("longer", "the limit is 4,194,304")),
    "macro_fan_out": ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
                      "longer than"),
    "string_times_1e10": ("{{ 'x' * 10**10 }}", "10,000,000,000 characters"),
    "string_times_chain": ("{{ 'x' * 1000000 * 1000000 }}", "characters"),
    "messages_times_1e9": ("{{ messages * 10**9 }}", "items"),
    "huge_power": ("{{ 2**100000000 }}", "too large a number"),
    "squaring_loop": ("{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}"
                      "{% endfor %}{{ ns.n }}", "too large a number"),
    "doubling_tilde": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}", "characters"),
    "doubling_plus": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                      "{% endfor %}", "characters"),
    "doubling_sets": ("{% set a = 'x' * 1000000 %}{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}"
                      "{% set e = d + d %}{{ e }}", "characters"),
    "replace_filter": ("{% set ns = namespace(s='xx') %}{% for i in range(64) %}"
                       "{% set ns.s = ns.s|replace('x', 'xx') %}{% endfor %}", "characters"),
    "replace_method": ("{{ ('x' * 4000).replace('x', 'y' * 4000) }}", "characters"),
    "center": ("{{ 'x'|center(10**9) }}", "as a size"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", "as a size"),
    "format_width": ("{{ '{:>999999999}'.format(1) }}", "characters"),
    "percent_width": ("{{ '%999999999s' % 1 }}", "characters"),
    "lipsum": ("{{ lipsum(10**7) }}", "as a size"),
    "big_join": ("{{ range(100000)|join(',' * 100) }}", "characters"),
    "endless_recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_template_cannot_escape_the_sandbox(case):
    # Using an unsafe attribute is a SecurityError; only printing one bare gives Jinja's empty
    # Undefined, as in transformers' own sandbox. Either way nothing of Python's internals leaks.
    try:
        out = ChatTemplate(ESCAPES[case], name="hostile").render(HI)
    except InvalidRequestError as err:
        assert "SecurityError" in err.message and "'hostile'" in err.message
    else:
        assert out == "", out


@pytest.mark.parametrize("case", list(EXPLOSIONS))
def test_template_cannot_run_forever_or_explode(case):
    source, fragment = EXPLOSIONS[case]
    started = time.monotonic()
    with pytest.raises(InvalidRequestError) as err:
        ChatTemplate(source, name="hostile").render(HI)
    assert time.monotonic() - started < 5  # the limit is 1 s; slack for a loaded machine
    fragments = fragment if isinstance(fragment, tuple) else (fragment,)
    assert any(f in err.value.message for f in fragments) and "'hostile'" in err.value.message
    assert "\n" not in err.value.message


def test_guards_keep_what_templates_do():
    # Loops with loop.* helpers, + chains, ~, filters and methods render as Jinja renders them.
    source = ("{% for m in messages %}{{ loop.index ~ '/' ~ loop.length }} {{ m.role + ': ' + m.content|upper }}"
              "{{ ' ' + m.content.replace('a', 'b') if loop.last else '' }}|{% endfor %}"
              "{{ ('-' * 3) + ('%s!' % 'ok') + '{}'.format(2) }}")
    messages = [{"role": "user", "content": "a cat"}, {"role": "assistant", "content": "ha"}]
    assert ChatTemplate(source).render(messages) == "1/2 user: A CAT|2/2 assistant: HA hb|---ok!2"
    assert "<|im_start|>user\nhi<|im_end|>" in ChatTemplate.builtin("chatml").render(HI)
    assert set(BUILTIN_TEMPLATES) == {"chatml", "phi3", "gemma", "llama3"}


def test_a_budget_is_per_render():
    template = ChatTemplate("{% for i in range(50000) %}{% endfor %}{{ messages[0].content }}")
    for _ in range(3):  # no leftover deadline from an earlier render
        assert template.render(HI) == "hi"


# -- model names ---------------------------------------------------------------------------------
BAD_NAMES = ["..", "../../etc/passwd", "smollm2/../../../etc", "%2e%2e", "%2e%2e%2fetc%2fpasswd",
             "file:///etc/passwd", "smollm2\x00.gguf", "smollm2\n", "a" * 5000, "SmolLM2", "smollm2:../x",
             "\ud800", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_store_names_cannot_leave_the_store(tmp_path, name):
    # A store name or tag never becomes a path. (A reference that looks like a path is a file the
    # local user names on purpose; the server serves those only when given to --model.)
    with pytest.raises(InvalidParameterError) as err:
        parse_reference(name)
    assert "\x00" not in err.value.message and len(err.value.message) < 400
    store = ModelStore(tmp_path, progress=False)
    if not looks_like_path(name):
        with pytest.raises((InvalidParameterError, ModelNotFoundError)):
            store.resolve(name)
        with pytest.raises(InvalidParameterError):
            store.folder(name)


def test_a_path_to_something_that_is_no_model_is_a_load_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("root:x:0:0:root:/root:/bin/bash\n" * 10)
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        LLM(str(notes))


def test_python_api_refuses_a_nul_byte_before_touching_the_file_system():
    with pytest.raises(InvalidParameterError, match="NUL"):
        LLM("/tmp/model\x00.gguf")


SERVER_NAMES = ["../../etc/passwd", "/etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "file:///etc/passwd",
                "smollm2\x00", "smollm2/../../x.gguf", "x" * 10000, "~root/.ssh/id_rsa"]


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_server_model_names_cannot_reach_files(server, name):
    chat = httpx.post(f"{server.base}/v1/chat/completions", timeout=30,
                      json={"model": name, "messages": HI, "max_tokens": 1})
    assert chat.status_code in (400, 404), chat.text
    error = chat.json()["error"]
    assert error["message"] and error["type"] in ("invalid_request_error", "not_found_error")
    assert "root:" not in chat.text  # no file content, whatever the path
    for path, body in (("/api/generate", {"model": name, "prompt": "hi"}), ("/api/show", {"model": name})):
        answer = httpx.post(f"{server.base}{path}", json=body, timeout=30)
        assert answer.status_code in (400, 404), answer.text
        assert isinstance(answer.json()["error"], str)
    card = httpx.get(f"{server.base}/v1/models/{quote(name, safe='/%')}", timeout=30)
    assert card.status_code == 404 and "error" in card.json()


# -- text that is not Unicode --------------------------------------------------------------------
LONE = b'"\\ud800 hi"'
ROUTES = [
    ("/v1/chat/completions", b'{"model": "smollm2", "max_tokens": 1, "messages": [{"role": "user", "content": %s}]}',
     "openai"),
    ("/v1/completions", b'{"model": "smollm2", "max_tokens": 1, "prompt": %s}', "openai"),
    ("/v1/embeddings", b'{"model": "smollm2", "input": %s}', "openai"),
    ("/v1/responses", b'{"model": "smollm2", "max_output_tokens": 1, "input": %s}', "openai"),
    ("/v1/messages", b'{"model": "smollm2", "max_tokens": 1, "messages": [{"role": "user", "content": %s}]}',
     "anthropic"),
    ("/api/chat", b'{"model": "smollm2", "stream": false, "messages": [{"role": "user", "content": %s}]}', "ollama"),
    ("/api/generate", b'{"model": "smollm2", "stream": false, "prompt": %s}', "ollama"),
    ("/api/embed", b'{"model": "smollm2", "input": %s}', "ollama"),
    ("/chat/completions?api-version=2024-05-01-preview",
     b'{"max_tokens": 1, "messages": [{"role": "user", "content": %s}]}', "azure"),
]


@pytest.mark.parametrize("route,body,api", ROUTES, ids=[r[0].split("?")[0] for r in ROUTES])
def test_lone_surrogates_are_a_400_on_every_route(server, route, body, api):
    for text in (LONE, b'"ok \\udc00"', b'"\\uDFFF"'):
        answer = httpx.post(f"{server.base}{route}", content=body % text, timeout=30,
                            headers={"content-type": "application/json"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        message = error if api == "ollama" else error["message"]
        assert "not valid Unicode" in message
        if api == "azure":
            assert error["code"] and answer.headers["x-ms-error-code"]


def test_surrogate_pairs_and_keys(server):
    pair = b'{"model": "smollm2", "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": "\\ud83d\\ude00 hi"}]}'
    ok = httpx.post(f"{server.base}/v1/chat/completions", content=pair, timeout=60,
                    headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text  # an emoji written as a UTF-16 pair is fine
    key = b'{"model": "smollm2", "\\udfff": 1, "messages": []}'
    bad = httpx.post(f"{server.base}/v1/chat/completions", content=key, timeout=30,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid Unicode" in bad.json()["error"]["message"]
    both = b'{"model": "smollm2", "\\udfff": "\\ud800", "messages": []}'
    bad = httpx.post(f"{server.base}/v1/chat/completions", content=both, timeout=30,
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400, bad.text  # the error names the key escaped, so the body can be written
    assert "\\udfff" in bad.json()["error"]["message"]
    after = httpx.post(f"{server.base}/v1/chat/completions", timeout=60,
                       json={"model": "smollm2", "max_tokens": 4, "temperature": 0,
                             "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]
