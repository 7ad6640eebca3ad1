"""Chat messages as slmkit's layers pass them: text or content parts (text, images), the tool
calls an assistant made, and the checks a text-only model applies to them."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from slmkit.errors import InvalidParameterError

IMAGE_DETAILS = ("auto", "low", "high")
# Magic numbers of the image formats vision APIs take, to name a data URL's media type.
_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                     (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"))


def image_media_type(data: bytes) -> str | None:
    """``image/png``, ``image/jpeg``, ``image/gif``, ``image/webp`` or ``image/bmp`` from the
    bytes themselves; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, media_type in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return media_type
    return None


@dataclass
class TextPart:
    """Text in a message's content parts (OpenAI's ``{"type": "text", "text": ...}``)."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass
class ImagePart:
    """An image in a message's content parts (OpenAI's ``{"type": "image_url", "image_url":
    {"url", "detail"}}``): a ``data:image/...;base64,...`` URL, or an http(s) URL the provider
    fetches itself. `from_file` builds the data URL from a local file."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise InvalidParameterError("image_url.url", "must be a data: URL or an http(s) URL")
        if self.detail is not None and self.detail not in IMAGE_DETAILS:
            raise InvalidParameterError("image_url.detail", f"must be one of {IMAGE_DETAILS}, got {self.detail!r}")
        if self.is_data_url:
            header, comma, data = self.url.partition(",")
            if not comma or not header.endswith(";base64") or not header[5:].startswith("image/"):
                raise InvalidParameterError("image_url.url", "a data URL must look like "
                                            "data:image/png;base64,<base64 data>")
            if not data:
                raise InvalidParameterError("image_url.url", "the data URL holds no image data")
        elif not self.url.lower().startswith(("http://", "https://")):
            raise InvalidParameterError("image_url.url", f"must be a data: URL or an http(s) URL, got "
                                        f"{self.url[:40]!r}; ImagePart.from_file(path) makes a data URL of a file")

    @classmethod
    def from_file(cls, path: "str | os.PathLike[str]", *, detail: Literal["auto", "low", "high"] | None = None
                  ) -> "ImagePart":
        """An image part holding a local image file as a base64 data URL (PNG, JPEG, GIF, WebP, BMP)."""
        file = Path(path).expanduser()
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InvalidParameterError("image", f"cannot read {file}: {exc.strerror or exc}") from None
        media_type = image_media_type(data)
        if media_type is None:
            raise InvalidParameterError("image", f"{file} is not a PNG, JPEG, GIF, WebP or BMP image")
        return cls(f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}", detail)

    @property
    def is_data_url(self) -> bool:
        return self.url[:5].lower() == "data:"

    @property
    def media_type(self) -> str | None:
        """The data URL's media type (``image/png``); None for an http(s) URL."""
        return self.url[5:].partition(";")[0] if self.is_data_url else None

    @property
    def base64_data(self) -> str | None:
        """The base64 payload of a data URL (what Ollama's ``images`` take); None for an http(s) URL."""
        return self.url.partition(",")[2] if self.is_data_url else None

    def to_dict(self) -> dict[str, Any]:
        image_url: dict[str, Any] = {"url": self.url}
        if self.detail is not None:
            image_url["detail"] = self.detail
        return {"type": "image_url", "image_url": image_url}


ContentPart = TextPart | ImagePart


def _coerce_part(value: Any, where: str) -> ContentPart:
    if isinstance(value, (TextPart, ImagePart)):
        return value
    if not isinstance(value, dict):
        raise InvalidParameterError(where, f"a content part must be a dict, got {value!r}")
    kind = value.get("type")
    if kind == "text":
        if not isinstance(value.get("text"), str):
            raise InvalidParameterError(f"{where}.text", "must be a string")
        return TextPart(value["text"])
    if kind == "image_url":
        image_url = value.get("image_url")
        if isinstance(image_url, str):  # a bare URL, as some clients send it
            image_url = {"url": image_url}
        if not isinstance(image_url, dict):
            raise InvalidParameterError(f"{where}.image_url", "must be {\"url\": ..., \"detail\": ...}")
        try:
            return ImagePart(image_url.get("url"), image_url.get("detail"))
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"{where}.{exc.param}", exc.detail) from None
    raise InvalidParameterError(f"{where}.type", f"must be 'text' or 'image_url', got {kind!r}")


@dataclass
class ToolCall:
    """A call of a tool the model made: ``arguments`` is a JSON object as text (OpenAI's shape)."""

    id: str
    name: str
    arguments: str

    def arguments_dict(self) -> dict[str, Any]:
        """The arguments parsed (Ollama's shape); ``{}`` when they are not a JSON object."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def coerce(cls, value: "ToolCall | dict[str, Any]", where: str = "tool_calls") -> "ToolCall":
        """From a `ToolCall`, or OpenAI's / Ollama's dict (arguments as text or as an object)."""
        if isinstance(value, ToolCall):
            return value
        function = value.get("function") if isinstance(value, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidParameterError(where, "each tool call needs function.name and function.arguments")
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        return cls(str(value.get("id") or f"call_{function['name']}"), function["name"], arguments)


@dataclass
class Message:
    """One chat message. ``content`` is text, or a list of content parts (`TextPart`,
    `ImagePart`) as OpenAI's API has them. `text` is the text either way; `images` the images.
    An assistant message may carry the `tool_calls` it made; a ``tool`` message answers the call
    ``tool_call_id``."""

    role: str
    content: str | list[ContentPart]
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.content is None:
            self.content = ""
        if not isinstance(self.content, str):
            self.content = [_coerce_part(part, f"content[{i}]") for i, part in enumerate(self.content)]
        self.tool_calls = [ToolCall.coerce(c, f"tool_calls[{i}]") for i, c in enumerate(self.tool_calls or [])]

    @classmethod
    def coerce(cls, value: "Message | dict[str, Any]") -> "Message":
        if isinstance(value, Message):
            return value
        if not isinstance(value, dict):
            raise InvalidParameterError("messages", f"each message must be a dict, got {value!r}")
        role, content = value.get("role"), value.get("content")
        if not isinstance(role, str) or not role:
            raise InvalidParameterError("messages", "each message needs a non-empty 'role'")
        tool_calls = value.get("tool_calls") or []
        if content is None and tool_calls:
            content = ""
        if not isinstance(content, (str, list, tuple)):
            raise InvalidParameterError("messages", "message content must be text or a list of content parts, "
                                        f"got {content!r}")
        return cls(role=role, content=content if isinstance(content, str) else list(content),
                   tool_calls=list(tool_calls), tool_call_id=value.get("tool_call_id"))

    @property
    def text(self) -> str:
        """The text of the message: ``content`` itself, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [] if isinstance(self.content, str) else [p for p in self.content if isinstance(p, ImagePart)]

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's shape: content as text, or as a list of part dicts when it is one."""
        if isinstance(self.content, str):
            data: dict[str, Any] = {"role": self.role, "content": self.content}
        else:
            data = {"role": self.role, "content": [part.to_dict() for part in self.content]}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        return data


def refuse_images(messages: Sequence[Message], model: str) -> None:
    """Raise `InvalidParameterError` if any message holds an image: for models that read text only,
    so an image is never silently dropped."""
    for i, message in enumerate(messages):
        if message.images:
            raise InvalidParameterError(
                f"messages[{i}]", f"{model} has no vision support: it reads text only, so the image cannot be "
                "used; remove the image, or send it to a vision model (e.g. nim:microsoft/phi-3.5-vision-instruct)")
