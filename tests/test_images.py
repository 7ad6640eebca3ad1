"""Images in chat messages: content parts on `Message`, the file -> data URL helper, and each
provider sending them in its wire format (OpenAI-shaped parts as they are; Ollama's bare base64
``images``), checked by the fake servers of tests/fake_providers.py."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from fake_providers import (  # noqa: F401  (fixtures)
    KEY,
    MODEL,
    REPLY,
    FakeProvider,
    fake,
    provider_for,
    run,
    transport,
    waits,
)

from slmkit.errors import InvalidParameterError
from slmkit.providers import ProviderRequest
from slmkit.types import ImagePart, Message, TextPart, image_media_type


def tiny_png() -> bytes:
    """A valid 1x1 white PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff"))
            + chunk(b"IEND", b""))


PNG = tiny_png()
PNG_BASE64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{PNG_BASE64}"
IMAGE_CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                 {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "low"}}]},
]


# -- Message and its parts ----------------------------------------------------------------
def test_content_parts_keep_the_text_usable():
    message = Message.coerce(IMAGE_CHAT[1])
    assert message.text == "What is in this picture?"
    assert message.images == [ImagePart(DATA_URL, "low")]
    assert message.images[0].media_type == "image/png" and message.images[0].base64_data == PNG_BASE64
    assert message.to_dict() == IMAGE_CHAT[1]  # OpenAI's shape, as it came
    two_texts = Message("user", [TextPart("Hello, "), {"type": "text", "text": "world"}])
    assert two_texts.text == "Hello, world" and two_texts.images == []


def test_text_messages_are_unchanged():
    message = Message.coerce({"role": "user", "content": "Hi"})
    assert message.content == "Hi" and message.text == "Hi" and message.images == []
    assert message.to_dict() == {"role": "user", "content": "Hi"}


@pytest.mark.parametrize("part, param", [
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}}, "content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}, "content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": DATA_URL, "detail": "medium"}}, "content[0].image_url.detail"),
    ({"type": "image_url"}, "content[0].image_url"),
    ({"type": "input_audio", "input_audio": {}}, "content[0].type"),
    ({"type": "text", "text": 3}, "content[0].text"),
])
def test_bad_parts_are_refused_by_name(part, param):
    with pytest.raises(InvalidParameterError) as err:
        Message.coerce({"role": "user", "content": [part]})
    assert err.value.param == param


def test_image_part_from_file(tmp_path):
    path = tmp_path / "photo.jpg"  # the bytes decide the media type, not the name
    path.write_bytes(PNG)
    part = ImagePart.from_file(path, detail="high")
    assert part.url == DATA_URL and part.detail == "high"
    assert part.to_dict() == {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "high"}}
    assert ImagePart.from_file(str(path)).to_dict() == {"type": "image_url", "image_url": {"url": DATA_URL}}


def test_image_part_from_file_refuses_what_is_not_an_image(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InvalidParameterError, match="not a PNG, JPEG"):
        ImagePart.from_file(text)
    with pytest.raises(InvalidParameterError, match="cannot read"):
        ImagePart.from_file(tmp_path / "missing.png")


def test_media_types_from_magic_bytes():
    assert image_media_type(PNG) == "image/png"
    assert image_media_type(b"\xff\xd8\xff\xe0....JFIF") == "image/jpeg"
    assert image_media_type(b"GIF89a...") == "image/gif"
    assert image_media_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_media_type(b"hello") is None


# -- providers ----------------------------------------------------------------------------
def test_image_reaches_each_provider_in_its_wire_format(fake, transport):
    request = ProviderRequest(MODEL[fake.kind], messages=IMAGE_CHAT)
    outs = run(provider_for(fake, transport), request)
    assert "".join(o.text for o in outs) == REPLY  # the fake server accepted the shape
    sent = fake.last.body["messages"]
    assert sent[0] == IMAGE_CHAT[0]
    if fake.kind == "ollama":
        assert sent[1] == {"role": "user", "content": "What is in this picture?", "images": [PNG_BASE64]}
    else:
        assert sent[1] == IMAGE_CHAT[1]


def test_fake_servers_refuse_the_wrong_shape(transport):
    """The check in the fake servers is real: an OpenAI-shaped message sent to Ollama is a 400."""
    from slmkit.errors import ProviderRequestError

    with FakeProvider("ollama", key=None) as fake:
        provider = provider_for(fake, transport)
        request = ProviderRequest("phi3.5", messages=IMAGE_CHAT, extra_body={"messages": IMAGE_CHAT})
        with pytest.raises(ProviderRequestError, match="content must be a string"):
            run(provider, request)


def test_ollama_cannot_take_image_urls(transport):
    with FakeProvider("ollama", key=None) as fake:
        request = ProviderRequest("phi3.5", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
        with pytest.raises(InvalidParameterError) as err:
            provider_for(fake, transport).stream(request)
        assert err.value.param == "messages[0]" and "base64" in err.value.message
        assert "ImagePart.from_file" in err.value.message
        assert fake.requests == []


def test_remote_llm_chat_with_a_file_image(monkeypatch, tmp_path):
    from slmkit import LLM

    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    with FakeProvider("github") as fake:
        monkeypatch.setenv("GITHUB_TOKEN", KEY)
        monkeypatch.setenv("GITHUB_MODELS_BASE_URL", fake.base_url)
        answer = LLM("github:Phi-3.5-mini-instruct").chat(
            [{"role": "user", "content": [{"type": "text", "text": "Describe it."}, ImagePart.from_file(image)]}])
    assert answer.text == REPLY
    assert fake.last.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": DATA_URL}}]}]
