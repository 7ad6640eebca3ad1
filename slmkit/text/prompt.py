"""From messages or a raw prompt to token ids, the same way for the Python API and the server."""

from __future__ import annotations

from typing import Sequence

from slmkit.backends.base import Tokenizer
from slmkit.text.chat_template import ChatTemplate, guess_builtin_template
from slmkit.types import Message, refuse_images

_TURN_MARKERS = ("<|im_start|>", "<|end|>", "<|assistant|>", "<start_of_turn>", "<|eot_id|>")


class PromptFormatter:
    """A model's chat template (the manifest's, else the GGUF's, else a built-in guessed from the
    architecture and special tokens), its default system prompt, and its BOS rule."""

    def __init__(self, tokenizer: Tokenizer, *, architecture: str, template: str | None,
                 system_prompt: str | None, model_name: str = "this model"):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.system_prompt = system_prompt
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
                            system_prompt: str | None = None) -> str:
        coerced = [Message.coerce(m) for m in messages]
        refuse_images(coerced, self.model_name)  # named here: the template only knows "this model"
        return self.chat_template.render(
            coerced,
            add_generation_prompt=add_generation_prompt,
            system_prompt=self.system_prompt if system_prompt is None else system_prompt,
        )

    def encode_prompt(self, prompt: str) -> list[int]:
        """Tokens of a raw prompt: BOS if the model wants it (and the text does not start with it)."""
        return encode_prompt(self.tokenizer, prompt)

    def encode_chat(self, messages: Sequence[Message | dict], *, system_prompt: str | None = None) -> list[int]:
        return self.encode_prompt(self.apply_chat_template(messages, system_prompt=system_prompt))


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Tokens of a raw prompt: BOS if the model wants it (and the text does not start with it)."""
    add_special = tokenizer.special.add_bos
    bos = tokenizer.special.bos
    if add_special and bos is not None and prompt.startswith(tokenizer.token_text(bos)):
        add_special = False
    return tokenizer.encode(prompt, add_special=add_special, parse_special=True)
