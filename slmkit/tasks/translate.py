"""Translate text with any model that has ``chat()``: local `LLM` or `RemoteLLM`.

Long input is split at sentence ends into pieces that leave room in the context for their
translation (translations often take more tokens than their source), and each piece is
translated on its own; paragraph breaks between pieces are kept.
"""

from __future__ import annotations

import re

from typing import Callable, Iterator

from slmkit.errors import InvalidParameterError
from slmkit.tasks.prompting import TaskPrompt, ask, prompt_tokens
from slmkit.tasks.text_split import TokenBudget, chunk_text, split_paragraphs
from slmkit.types import SamplingParams

LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak",
    "sl": "Slovenian", "sv": "Swedish", "sw": "Swahili", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}

OUTPUT_RATIO = 2.0
"""Tokens of room kept for the translation per source token: target languages and tokenizers
trained mostly on English can double the count."""

MAX_CHUNK_TOKENS = 384
"""Small models translate short passages far better than long ones, whatever their context."""


def language_name(language: str) -> str:
    """``fr`` / ``FR`` / ``fr-CA`` -> ``French``; a name (``French``, ``Brazilian Portuguese``) as given."""
    code = language.strip().lower().replace("_", "-").split("-")[0]
    if code in LANGUAGES:
        return LANGUAGES[code]
    if not language.strip():
        raise InvalidParameterError("language", "must not be empty")
    if len(code) <= 3 or not _LANGUAGE_NAME.fullmatch(language.strip()):
        raise InvalidParameterError("language", f"unknown language {language!r}: use a code ({', '.join(list(LANGUAGES)[:6])}, "
                                    "...) or a language's name in English (French, Brazilian Portuguese)")
    return language.strip()


_LANGUAGE_NAME = re.compile(r"[A-Za-z][A-Za-z ()'-]{3,40}")


def translation_prompt(text: str, target: str, source: str | None = None) -> TaskPrompt:
    target_name = language_name(target)
    source_name = language_name(source) if source else None
    if source_name:
        instruction = (f"Translate the following {source_name} text to {target_name}. "
                       f"Reply with the {target_name} translation only.")
        cue = f"Translate {source_name} to {target_name}.\n\n{source_name}: {text}\n{target_name}:"
    else:
        instruction = f"Translate the following text to {target_name}. Reply with the {target_name} translation only."
        cue = f"Translate to {target_name}.\n\nText: {text}\n{target_name}:"
    # Small models follow a translation with notes on it ("In German, the phrase ..."): a piece
    # of one paragraph (or line) ends at the first paragraph (or line) break.
    stop = ("\n",) if "\n" not in text.strip() else ("\n\n",) if "\n\n" not in text.strip() else ()
    return TaskPrompt(instruction, text, cue, chat_stop=stop,
                      completion_stop=(*stop, f"\n{source_name or 'Text'}:", f"\n{target_name}:"))


def iter_translation(model, text: str, *, to: str, source: str | None = None,
                     params: SamplingParams | None = None, context_length: int | None = None,
                     chunk_tokens: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None) -> Iterator[str]:
    """Yield the translation piece by piece, each followed by the whitespace that ended its source."""
    params = params or SamplingParams(temperature=0.0)
    budget = TokenBudget.for_model(model, context_length)
    overhead = prompt_tokens(budget, translation_prompt("", to, source), model)
    room = budget.context_length - overhead
    limit = min(chunk_tokens or MAX_CHUNK_TOKENS, int(room / (1 + OUTPUT_RATIO)))
    if limit < 8:
        raise InvalidParameterError(
            "context_length", f"{budget.context_length} tokens leave no room to translate after the "
            f"{overhead}-token prompt; use a larger context")
    # Paragraph by paragraph: a piece never spans a paragraph break, so its translation ends at one.
    chunks = [chunk for paragraph in split_paragraphs(text) for chunk in chunk_text(paragraph, limit, budget.count)]
    pending = [c for c in chunks if c.strip()]
    done = 0
    for chunk in chunks:
        if not chunk.strip():
            yield chunk
            continue
        source_tokens = budget.count(chunk)
        max_tokens = max(16, min(room - source_tokens, int(source_tokens * OUTPUT_RATIO) + 16))
        if params.max_tokens is not None:
            max_tokens = min(max_tokens, params.max_tokens)
        answer = ask(model, translation_prompt(chunk.strip(), to, source), params.updated(max_tokens=max_tokens))
        done += 1
        if on_progress:
            on_progress(done, len(pending))
        yield answer + _trailing_space(chunk)


def translate(model, text: str, *, to: str, source: str | None = None,
              params: SamplingParams | None = None, context_length: int | None = None,
              chunk_tokens: int | None = None) -> str:
    """The whole translation of `text` into language `to` (a code like ``fr`` or a name)."""
    if not text.strip():
        raise InvalidParameterError("text", "there is nothing to translate")
    pieces = iter_translation(model, text, to=to, source=source, params=params,
                              context_length=context_length, chunk_tokens=chunk_tokens)
    return "".join(pieces).strip()


def _trailing_space(chunk: str) -> str:
    """The separator after a chunk: a paragraph break survives, a plain space stays a space."""
    tail = chunk[len(chunk.rstrip()):]
    if "\n\n" in tail:
        return "\n\n"
    if "\n" in tail:
        return "\n"
    return " " if tail else ""
