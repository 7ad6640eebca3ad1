"""From messages or a raw prompt to token ids, the same way for the Python API and the server.

A vision model's prompt also carries image rows (`EncodedPrompt.embeddings`): image parts of the
messages, or images given beside them, become ``<|image_N|>`` tags that its `VisionEncoder` expands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from slmkit.backends.base import EmbeddingSpan, Tokenizer
from slmkit.structure import Tool
from slmkit.text.chat_template import ChatTemplate, guess_builtin_template
from slmkit.text.tool_calls import fold_tool_messages
from slmkit.errors import InvalidParameterError
from slmkit.types import Message, refuse_images

_TURN_MARKERS = ("<|im_start|>", "<|end|>", "<|assistant|>", "<start_of_turn>", "<|eot_id|>")


@dataclass
class EncodedPrompt:
    """Prompt token ids, and for a vision model the image rows that replace some of their embeddings."""

    token_ids: list[int]
    embeddings: list[EmbeddingSpan] = field(default_factory=list)
    image_tokens: int = 0  # of len(token_ids), how many are image rows
    encode_seconds: float = 0.0  # decoding, preprocessing and the vision tower


class PromptFormatter:
    """A model's chat template (the manifest's, else the GGUF's, else a built-in guessed from the
    architecture and special tokens), its default system prompt, the conversation every chat
    starts with (a Modelfile's ``MESSAGE`` lines), and its BOS rule. ``vision`` is a vision
    model's `VisionEncoder` (None: the model reads text only and refuses images)."""

    def __init__(self, tokenizer: Tokenizer, *, architecture: str, template: str | None,
                 system_prompt: str | None, model_name: str = "this model", vision: Any = None,
                 preset_messages: Sequence[Message | dict] = ()):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.system_prompt = system_prompt
        self.vision = vision
        self.preset_messages = [Message.coerce(m) for m in preset_messages]
        special = tokenizer.special
        bos = tokenizer.token_text(special.bos) if special.bos is not None else ""
        eos = tokenizer.token_text(special.eos) if special.eos is not None else ""
        if template:
            self.chat_template = ChatTemplate(template, bos_token=bos, eos_token=eos)
        else:
            names = {tokenizer.token_text(t) for t in special.end_of_generation}
            names |= {m for m in _TURN_MARKERS if tokenizer.token_id(m) is not None}
            self.chat_template = ChatTemplate.builtin(guess_builtin_template(architecture, names),
                                                      bos_token=bos, eos_token=eos)

    def apply_chat_template(self, messages: Sequence[Message | dict], *, add_generation_prompt: bool = True,
                            system_prompt: str | None = None, tools: Sequence[Tool] = ()) -> str:
        """The prompt text. `tools` (and tool calls / results in the history) go through the
        template when it renders tools, else through `fold_tool_messages`'s default block."""
        coerced = self._with_presets(messages)
        refuse_images(coerced, self.model_name)  # named here: the template only knows "this model"
        system = self.system_prompt if system_prompt is None else system_prompt
        extra = {}
        if tools or any(m.tool_calls or m.role == "tool" for m in coerced):
            if self.chat_template.supports_tools:
                extra["tools"] = [t.to_dict() for t in tools] or None
            else:
                if system is not None and not any(m.role == "system" for m in coerced):
                    coerced.insert(0, Message("system", system))
                coerced = fold_tool_messages(coerced, tools)
        return self.chat_template.render(coerced, add_generation_prompt=add_generation_prompt,
                                         system_prompt=system, **extra)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Tokens of a raw prompt: BOS if the model wants it (and the text does not start with it)."""
        return encode_prompt(self.tokenizer, prompt)

    def encode_chat(self, messages: Sequence[Message | dict], *, system_prompt: str | None = None,
                    tools: Sequence[Tool] = ()) -> list[int]:
        return self.encode_prompt(self.apply_chat_template(messages, system_prompt=system_prompt, tools=tools))

    def encode_with_images(self, messages: Sequence[Message | dict], images: Sequence[Any] = (), *,
                           num_crops: int | None = None, system_prompt: str | None = None) -> EncodedPrompt:
        """A conversation's tokens and image rows: image parts where they stand, ``images`` (paths,
        bytes, PIL images) at the start of the last user message unless the text tags them."""
        coerced = self._with_presets(messages)
        if not images and not any(m.images for m in coerced):
            return EncodedPrompt(self.encode_chat(coerced, system_prompt=system_prompt))
        self._need_vision(coerced, images)
        from slmkit.vision.prompt import tag_images

        tagged = tag_images(coerced, images)
        text = self.chat_template.render(
            tagged.messages, add_generation_prompt=True,
            system_prompt=self.system_prompt if system_prompt is None else system_prompt)
        return self.vision.build(text, tagged.images, names=tagged.names, num_crops=num_crops)

    def encode_prompt_with_images(self, prompt: str, images: Sequence[Any] = (), *,
                                  num_crops: int | None = None) -> EncodedPrompt:
        """A raw prompt whose ``<|image_N|>`` tags stand for ``images``."""
        if not images:
            return EncodedPrompt(self.encode_prompt(prompt))
        self._need_vision([], images)
        names = [image if isinstance(image, str) else f"images[{i}]" for i, image in enumerate(images)]
        return self.vision.build(prompt, list(images), names=names, num_crops=num_crops)

    def _with_presets(self, messages: Sequence[Message | dict]) -> list[Message]:
        coerced = [Message.coerce(m) for m in messages]
        if self.preset_messages:  # after the caller's system message, as Ollama places them
            head = 1 if coerced and coerced[0].role == "system" else 0
            coerced = coerced[:head] + self.preset_messages + coerced[head:]
        return coerced

    def _need_vision(self, messages: list[Message], images: Sequence[Any]) -> None:
        if self.vision is not None:
            return
        refuse_images(messages, self.model_name)
        raise InvalidParameterError("images", f"{self.model_name} has no vision support: it reads text only, so "
                                    "the images cannot be used; send them to a vision model (Phi-3.5-vision)")


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Tokens of a raw prompt: BOS if the model wants it (and the text does not start with it)."""
    add_special = tokenizer.special.add_bos
    bos = tokenizer.special.bos
    if add_special and bos is not None and prompt.startswith(tokenizer.token_text(bos)):
        add_special = False
    return tokenizer.encode(prompt, add_special=add_special, parse_special=True)
