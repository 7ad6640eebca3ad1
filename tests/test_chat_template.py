"""Chat templates: built-ins render exact prompts, real templates behave as in transformers."""

import pytest

from slmkit.errors import InvalidParameterError, InvalidRequestError
from slmkit.text import BUILTIN_TEMPLATES, ChatTemplate, guess_builtin_template
from slmkit.types import Message

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]

EXPECTED = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n",
        "<|im_start|>assistant\n",
        "",
    ),
    "phi3": (
        "<|system|>\nBe brief.<|end|>\n"
        "<|user|>\nHi<|end|>\n"
        "<|assistant|>\nHello!<|end|>\n"
        "<|user|>\n2+2?<|end|>\n",
        "<|assistant|>\n",
        "<|endoftext|>",
    ),
    "gemma": (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n",
        "<start_of_turn>model\n",
        "",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "",
    ),
}

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def test_every_builtin_has_an_expected_rendering():
    assert set(EXPECTED) == set(BUILTIN_TEMPLATES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_with_generation_prompt(name):
    body, generation_prompt, _ = EXPECTED[name]
    assert ChatTemplate.builtin(name).render(CONVERSATION) == body + generation_prompt


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_without_generation_prompt(name):
    body, _, tail = EXPECTED[name]
    rendered = ChatTemplate.builtin(name).render(CONVERSATION, add_generation_prompt=False)
    assert rendered == body + tail


def test_builtin_special_tokens_can_be_overridden():
    template = ChatTemplate.builtin("gemma", bos_token="")
    assert template.render([{"role": "user", "content": "Hi"}]).startswith("<start_of_turn>user")


def test_unknown_builtin_is_a_parameter_error():
    with pytest.raises(InvalidParameterError):
        ChatTemplate.builtin("alpaca")


def test_phi3_skips_an_empty_system_message():
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]
    assert ChatTemplate.builtin("phi3").render(messages) == "<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_messages_may_be_message_objects():
    messages = [Message("user", "Hi")]
    assert ChatTemplate.builtin("chatml").render(messages) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_system_prompt_is_inserted_only_without_a_system_message():
    template = ChatTemplate.builtin("chatml")
    user_only = [{"role": "user", "content": "Hi"}]
    assert template.render(user_only, system_prompt="Default.") == (
        "<|im_start|>system\nDefault.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = template.render(CONVERSATION, system_prompt="Default.")
    assert "Default." not in with_system
    assert with_system == template.render(CONVERSATION)


def test_smollm2_template_uses_its_own_default_system_prompt():
    template = ChatTemplate(SMOLLM2_TEMPLATE, name="smollm2")
    assert template.render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_smollm2_default_is_overridden_by_a_system_prompt():
    template = ChatTemplate(SMOLLM2_TEMPLATE, name="smollm2")
    rendered = template.render([{"role": "user", "content": "Hi"}], system_prompt="Talk like a pirate.")
    assert rendered == (
        "<|im_start|>system\nTalk like a pirate.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "SmolLM" not in rendered


def test_extra_variables_reach_the_template():
    template = ChatTemplate("{{ greeting }} {{ messages[0].content }}{{ bos_token }}", bos_token="<s>")
    assert template.render([{"role": "user", "content": "Hi"}], greeting="Hey") == "Hey Hi<s>"


def test_tojson_keeps_unicode_and_supports_indent():
    template = ChatTemplate("{{ messages[0] | tojson(indent=2) }}")
    rendered = template.render([{"role": "user", "content": "héllo <b>"}])
    assert rendered == '{\n  "role": "user",\n  "content": "héllo <b>"\n}'


def test_loop_controls_and_generation_tag_are_supported():
    source = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert ChatTemplate(source).render(messages) == "a"


def test_strftime_now_is_available():
    assert ChatTemplate("{{ strftime_now('%Y') }}").render([{"role": "user", "content": ""}]).isdigit()


def test_raise_exception_becomes_invalid_request_with_the_templates_message():
    source = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    with pytest.raises(InvalidRequestError, match="System role not supported"):
        ChatTemplate(source).render(CONVERSATION)


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages[0].__init__.__globals__ }}",
        "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",
    ],
)
def test_sandbox_blocks_escapes_and_mutation(source):
    with pytest.raises(InvalidRequestError, match="unsafe"):
        ChatTemplate(source).render(CONVERSATION)


def test_broken_template_is_rejected_when_compiled():
    with pytest.raises(InvalidRequestError, match="broken"):
        ChatTemplate("{% for message in messages %}{{ message['content'] }}", name="bad-model")


def test_template_runtime_error_is_an_invalid_request():
    with pytest.raises(InvalidRequestError):
        ChatTemplate("{{ messages[0]['content'] + 1 }}").render(CONVERSATION)


def test_empty_message_list_is_a_parameter_error():
    with pytest.raises(InvalidParameterError) as error:
        ChatTemplate.builtin("chatml").render([])
    assert error.value.param == "messages"


def test_malformed_message_is_a_parameter_error():
    with pytest.raises(InvalidParameterError):
        ChatTemplate.builtin("chatml").render([{"role": "user"}])


@pytest.mark.parametrize(
    ("architecture", "tokens", "expected"),
    [
        ("llama", {"<|im_start|>", "<|im_end|>"}, "chatml"),
        ("qwen2", {"<|im_start|>", "<|endoftext|>"}, "chatml"),
        ("phi3", {"<|end|>", "<|assistant|>", "<|user|>"}, "phi3"),
        ("gemma2", {"<start_of_turn>", "<end_of_turn>"}, "gemma"),
        ("llama", {"<|eot_id|>", "<|start_header_id|>"}, "llama3"),
        ("phi3", set(), "phi3"),
        ("gemma3", set(), "gemma"),
        ("llama", {"<s>", "</s>"}, "chatml"),
        ("unknown", set(), "chatml"),
    ],
)
def test_guess_builtin_template(architecture, tokens, expected):
    assert guess_builtin_template(architecture, tokens) == expected
