"""Summarize text with any model that has ``chat()``: in one pass when it fits the context,
map-reduce when it does not.

Map: the text is split at sentence ends into chunks that fit beside the prompt and the summary,
and each chunk is summarized. Reduce: the partial summaries are summarized together into the
final one, in the asked form; if they are themselves too long, they are first summarized in
groups (collapse), level by level, until they fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from slmkit.errors import InvalidParameterError
from slmkit.tasks.prompting import TaskPrompt, ask, prompt_tokens
from slmkit.tasks.text_split import TokenBudget, chunk_text, split_sentences
from slmkit.types import SamplingParams

MAP_SUMMARY_TOKENS = 160
"""Room for each partial summary: a few sentences of key facts."""

MAX_COLLAPSE_LEVELS = 4


@dataclass
class Summary:
    text: str
    chunks: int  # pieces the input was split into (1: it fitted in one pass)
    map_calls: int  # model calls on pieces of the input
    collapse_calls: int  # model calls merging partial summaries before the last one
    total_calls: int


@dataclass
class SummaryForm:
    """At most `words` words, or `bullets` bullet points; neither: a short paragraph."""

    words: int | None = None
    bullets: int | None = None

    def __post_init__(self) -> None:
        if self.words is not None and self.bullets is not None:
            raise InvalidParameterError("words", "ask for either a number of words or of bullets, not both")
        for name in ("words", "bullets"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidParameterError(name, f"must be at least 1, got {value}")

    def instruction(self) -> str:
        if self.bullets:
            return (f"Summarize the following text as {self.bullets} bullet points, one per line, "
                    "each starting with \"- \". Reply with the bullet points only.")
        if self.words:
            return f"Summarize the following text in at most {self.words} words. Reply with the summary only."
        return "Summarize the following text in a short paragraph. Reply with the summary only."

    def max_tokens(self) -> int:
        if self.bullets:
            return 40 * self.bullets + 16
        if self.words:
            return 2 * self.words + 16
        return 200

    def enforce(self, text: str) -> str:
        """Hold a small model to the form: bullets normalized to "- " (sentences become bullets if
        it wrote prose) and cut to the number asked; prose cut to the word limit at a sentence end."""
        if self.bullets:
            items = [m.group(1).strip() for m in re.finditer(r"^\s*(?:[-*•]|\d+[.)])\s+(.+)$", text, re.MULTILINE)]
            if not items:
                items = [s.strip() for s in split_sentences(" ".join(text.split())) if s.strip()]
            return "\n".join(f"- {item}" for item in items[: self.bullets])
        text = text.strip()
        if self.words and len(text.split()) > self.words:
            kept = ""
            for sentence in split_sentences(" ".join(text.split())):
                if len((kept + sentence).split()) > self.words:
                    break
                kept += sentence
            text = kept.strip() or " ".join(text.split()[: self.words]) + "…"
        return text


_MAP_INSTRUCTION = ("Summarize the following part of a longer text in a few sentences. Keep the key facts, "
                    "names and numbers. Reply with the summary only.")


def _prompt(instruction: str, text: str) -> TaskPrompt:
    return TaskPrompt(instruction, text, f"{text}\n\nTL;DR:")


def summarize(model, text: str, *, words: int | None = None, bullets: int | None = None,
              params: SamplingParams | None = None, context_length: int | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> Summary:
    """Summarize `text`; `on_progress(done, total)` is called after each model call.

    ``params.max_tokens`` (if set) caps every call; `context_length` below the model's forces
    map-reduce on shorter texts.
    """
    form = SummaryForm(words, bullets)
    if not text.strip():
        raise InvalidParameterError("text", "there is nothing to summarize")
    params = params or SamplingParams(temperature=0.0)
    budget = TokenBudget.for_model(model, context_length)
    cap = params.max_tokens or budget.context_length
    final_tokens, map_tokens = min(form.max_tokens(), cap), min(MAP_SUMMARY_TOKENS, cap)
    overhead = max(prompt_tokens(budget, _prompt(form.instruction(), ""), model),
                   prompt_tokens(budget, _prompt(_MAP_INSTRUCTION, ""), model))
    room = budget.context_length - overhead - max(final_tokens, map_tokens) - 8
    if room < 32:
        raise InvalidParameterError(
            "context_length", f"{budget.context_length} tokens leave no room for text beside the prompt "
            f"and the summary; use a larger context or fewer words")
    calls = {"map": 0, "collapse": 0, "final": 0}
    total = [1]  # model calls expected; grows when partial summaries need collapsing

    def call(instruction: str, piece: str, max_tokens: int, kind: str) -> str:
        answer = ask(model, _prompt(instruction, piece), params.updated(max_tokens=max_tokens))
        calls[kind] += 1
        if on_progress:
            on_progress(sum(calls.values()), total[0])
        return answer

    if budget.count(text) <= room:
        final = call(form.instruction(), text.strip(), final_tokens, "final")
        return Summary(form.enforce(final), 1, 0, 0, 1)

    chunks = [c for c in chunk_text(text, room, budget.count) if c.strip()]
    total[0] = len(chunks) + 1
    partials = [call(_MAP_INSTRUCTION, chunk.strip(), map_tokens, "map") for chunk in chunks]
    for _ in range(MAX_COLLAPSE_LEVELS):
        joined = "\n\n".join(p for p in partials if p)
        if budget.count(joined) <= room:
            break
        groups = [g for g in chunk_text(joined, room, budget.count) if g.strip()]
        if len(groups) >= len(partials):
            break  # the partial summaries do not shrink: stop and keep what fits
        total[0] += len(groups)
        partials = [call(_MAP_INSTRUCTION, group.strip(), map_tokens, "collapse") for group in groups]
    # What still does not fit after collapsing (or nothing, if every answer was empty) falls back
    # to the leading part: a summary of the first pieces beats none.
    joined = (chunk_text("\n\n".join(p for p in partials if p), room, budget.count) or chunks)[0]
    final = call(form.instruction(), joined.strip(), final_tokens, "final")
    return Summary(form.enforce(final), len(chunks), calls["map"], calls["collapse"],
                   calls["map"] + calls["collapse"] + 1)
