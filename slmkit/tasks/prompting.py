"""How tasks talk to a model: an instruction for chat models, a completion cue for base models,
and the cleanup that leaves only the answer.

Instruction-tuned families (SmolLM2's ChatML, Phi-3, Gemma-it, Qwen, remote chat models) follow
an instruction in the user turn; the user turn, not a system message, because some families'
templates (Gemma's) have no system role and tiny models drift from a system instruction. A GGUF
without a chat template of its own is a base model (e.g. gemma3-270m): asked in chat form it
repeats the question, so it gets a completion cue it continues instead ("French:", "TL;DR:").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slmkit.types import Message, SamplingParams


def follows_instructions(model) -> bool:
    """False for a local model whose GGUF has no chat template (a base model); True otherwise."""
    info = getattr(model, "info", None)
    if info is None:
        return True  # a remote chat model
    manifest = getattr(model, "manifest", None)
    return bool(info.chat_template or (manifest is not None and manifest.template))


@dataclass
class TaskPrompt:
    """One request in both forms; `ask` picks the one the model follows."""

    instruction: str  # chat form: the instruction, then the text
    text: str
    completion_prefix: str  # completion form: text the base model continues
    completion_stop: tuple[str, ...] = ("\n\n",)
    chat_stop: tuple[str, ...] = ()

    def messages(self) -> list[Message]:
        return [Message("user", f"{self.instruction}\n\n{self.text}")]


def ask(model, prompt: TaskPrompt, params: SamplingParams) -> str:
    """The model's answer to `prompt`, in the form its family follows, cleaned to the answer."""
    if follows_instructions(model):
        text = model.chat(prompt.messages(), params.updated(stop=[*params.stop, *prompt.chat_stop])).text
    else:
        params = params.updated(stop=[*params.stop, *prompt.completion_stop])
        text = model.generate(prompt.completion_prefix, params).text
    return clean_answer(text, prompt.instruction)


def prompt_tokens(budget, prompt: TaskPrompt, model) -> int:
    """Tokens the prompt takes around the text, so the text's own budget is what remains."""
    if follows_instructions(model):
        return budget.count_messages(prompt.messages())
    return budget.count(prompt.completion_prefix) + 1


_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:[\w-]+\s+){0,3}(?:translation|translated text|summary|tl;\s*dr|answer|output)"
    r"(?:\s*\([^)]*\))?\s*(?:\*\*)?\s*:\s*(?:\*\*)?",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are))\b[^\n]{0,120}:\s*\n", re.IGNORECASE
)
_TRAILING_NOTE = re.compile(r"\n\s*\(?\s*(?:note|explanation)\s*:.*\Z", re.IGNORECASE | re.DOTALL)
_QUOTES = {'"': '"', "“": "”", "«": "»", "'": "'"}


def clean_answer(text: str, instruction: str = "") -> str:
    """Only the answer: no echoed instruction, "Here is ...:" preamble, "Translation:" label,
    wrapping quotes, or trailing "Note: ..."."""
    text = text.strip()
    if instruction and text.startswith(instruction.strip()):
        text = text[len(instruction.strip()):].strip()
    text = _PREAMBLE.sub("", text, count=1)
    text = _LABEL.sub("", text, count=1)
    text = _TRAILING_NOTE.sub("", text).strip()
    if len(text) > 1 and text[0] in _QUOTES and text.endswith(_QUOTES[text[0]]):
        inner = text[1:-1]
        if text[0] not in inner:
            text = inner.strip()
    return text
