"""Split long text into pieces that fit a model's context: at sentence ends, measured in tokens.

Splitting is lossless: ``"".join(chunks) == text``. Every sentence keeps its trailing whitespace
and lands whole in exactly one chunk, in order; only a sentence that alone exceeds the budget is
cut further, at word boundaries (and a single over-long "word" at character boundaries).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from slmkit.errors import InvalidParameterError
from slmkit.types import Message

# A sentence ends at . ! ? … (or their CJK forms), possibly followed by closing quotes or brackets,
# then whitespace; a blank line ends one too (headings, list items without a full stop).
_SENTENCE_END = re.compile(
    r"""(?<=[.!?…。！？])["'”’»)\]]*\s+   # terminator, closers, the whitespace after it
      | (?<=[。！？])                       # CJK terminators need no space after them
      | \n\s*\n\s*                          # a paragraph break
    """,
    re.VERBOSE,
)
# Abbreviations that end in a full stop but rarely end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e fig no vol approx inc ltd co jan feb mar apr jun jul "
    "aug sep sept oct nov dec".split()
)

CHARS_PER_TOKEN = 4.0
"""Rough size of a token in English text, for models whose tokenizer is not at hand (remote)."""


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each with the whitespace that follows it (so they join back to `text`)."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end <= start:
            continue
        candidate = text[start:match.start()]
        last_word = candidate.rsplit(None, 1)[-1].rstrip(".").lower() if candidate.strip() else ""
        if "\n" not in match.group() and (last_word in _ABBREVIATIONS or _is_initial(last_word)):
            continue
        sentences.append(text[start:end])
        start = end
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def _is_initial(word: str) -> bool:
    return len(word) == 1 and word.isalpha()


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs of `text`, each with the blank lines after it (so they join back to `text`)."""
    return [m.group() for m in re.finditer(r".*?(?:\n[ \t]*\n\s*|\Z)", text, re.DOTALL) if m.group()]


def chunk_text(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Pack whole sentences, in order, into chunks of at most `max_tokens` (by `count_tokens`)."""
    if max_tokens < 1:
        raise InvalidParameterError("max_tokens", f"a chunk needs room for at least one token, got {max_tokens}")
    pieces: list[str] = []
    for sentence in split_sentences(text):
        if count_tokens(sentence) <= max_tokens:
            pieces.append(sentence)
        else:
            pieces.extend(_split_long(sentence, max_tokens, count_tokens))
    return _pack(pieces, max_tokens, count_tokens)


def _pack(pieces: list[str], max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Join consecutive pieces greedily while the joined text stays within ``max_tokens``."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and count_tokens(current + piece) > max_tokens:
            chunks.append(current)
            current = ""
        current += piece
    if current:
        chunks.append(current)
    return chunks


def _split_long(sentence: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Cut one over-long sentence at word boundaries, then characters, each part within budget."""
    parts: list[str] = []
    words: list[str] = []
    for word in re.findall(r"\S+\s*|\s+", sentence):
        if count_tokens(word) > max_tokens:
            parts.extend(_pack(words, max_tokens, count_tokens))
            parts.extend(_split_chars(word, max_tokens, count_tokens))
            words = []
        else:
            words.append(word)
    return parts + _pack(words, max_tokens, count_tokens)


def _split_chars(word: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    parts: list[str] = []
    while word:
        # Binary search for the longest prefix within budget (one character always fits).
        low, high = 1, len(word)
        while low < high:
            mid = (low + high + 1) // 2
            if count_tokens(word[:mid]) <= max_tokens:
                low = mid
            else:
                high = mid - 1
        parts.append(word[:low])
        word = word[low:]
    return parts


@dataclass
class TokenBudget:
    """What a task needs to know about a model's size limits.

    Local models count exactly with their own tokenizer and chat template; remote ones estimate
    from characters (`CHARS_PER_TOKEN`), since their tokenizer lives with the provider.
    """

    context_length: int
    count: Callable[[str], int]
    count_messages: Callable[[Sequence[Message]], int]
    exact: bool

    @classmethod
    def for_model(cls, model, context_length: int | None = None) -> "TokenBudget":
        """`model` is an `LLM` (exact counts) or anything with ``chat()`` (estimated counts).

        `context_length` overrides the model's own, e.g. to force chunking on purpose.
        """
        tokenizer = getattr(model, "tokenizer", None)
        own_context = getattr(model, "context_length", None)
        context = context_length or own_context or 4096
        if own_context:
            context = min(context, own_context)
        if tokenizer is not None and hasattr(model, "apply_chat_template"):
            return cls(
                context_length=context,
                count=lambda text: len(tokenizer.encode(text, add_special=False, parse_special=False)),
                count_messages=lambda messages: len(model.encode_prompt(model.apply_chat_template(messages))),
                exact=True,
            )
        return cls(context_length=context, count=estimate_tokens,
                   count_messages=lambda messages: sum(estimate_tokens(m.content) + 8 for m in messages) + 8,
                   exact=False)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)
