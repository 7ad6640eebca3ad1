"""A local (text-only) model given an image: a clear 400 naming the model, on every API and in
the Python API, never the image silently dropped."""

from __future__ import annotations

import ollama
import openai
import pytest
from test_images import DATA_URL, IMAGE_CHAT, PNG

from slmkit.errors import InvalidParameterError

pytestmark = pytest.mark.slow


def test_python_api_refuses_images(llm):
    with pytest.raises(InvalidParameterError) as err:
        llm.chat(IMAGE_CHAT)
    assert err.value.param == "messages[1]" and "smollm2" in err.value.message
    assert "no vision support" in err.value.message
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}]
    assert llm.apply_chat_template(text_parts) == llm.apply_chat_template([{"role": "user",
                                                                             "content": "What is 2 + 2?"}])


def test_openai_route_refuses_images_for_a_local_model(server):
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smollm2", messages=IMAGE_CHAT, stream=stream)
        assert "smollm2" in err.value.message and "has no vision support" in err.value.message
        assert err.value.body["param"] == "messages[1]"
    with pytest.raises(openai.BadRequestError, match="image_url.url"):
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])


def test_azure_route_refuses_images_for_a_local_model(server):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import ImageContentItem, ImageUrl, TextContentItem, UserMessage
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import HttpResponseError

    client = ChatCompletionsClient(endpoint=server.base, credential=AzureKeyCredential("unused"))
    with pytest.raises(HttpResponseError) as err:
        client.complete(model="smollm2", messages=[UserMessage(content=[
            TextContentItem(text="What is this?"), ImageContentItem(image_url=ImageUrl(url=DATA_URL))])])
    assert err.value.status_code == 400 and "no vision support" in str(err.value)


def test_ollama_routes_refuse_images_for_a_local_model(server):
    client = ollama.Client(host=server.base, timeout=60)
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="smollm2", messages=[{"role": "user", "content": "What is this?", "images": [PNG]}])
    assert err.value.status_code == 400 and "smollm2" in err.value.error and "no vision support" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="smollm2", prompt="What is this?", images=[PNG])
    assert err.value.status_code == 400 and "no vision support" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="smollm2", prompt="What is this?", images=[PNG], raw=True)
    assert err.value.status_code == 400 and "raw" in err.value.error
