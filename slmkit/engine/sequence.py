"""One request's state inside the batching engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from slmkit.backends.base import EmbeddingSpan
from slmkit.errors import ContextLengthError, InvalidParameterError
from slmkit.types import FinishReason, SamplingParams


def check_prompt_tokens(ids: list[int], *, vocab_size: int, context_length: int, already: int = 0) -> None:
    """Refuse, before any work, prompt tokens that are empty, out of vocabulary, or that leave no
    room to generate (``already``: tokens the sequence holds before these)."""
    if not ids:
        raise InvalidParameterError("prompt", "the prompt is empty")
    if min(ids) < 0 or max(ids) >= vocab_size:  # C-speed scan; this runs for every request
        bad = next(t for t in ids if not 0 <= t < vocab_size)
        raise InvalidParameterError("prompt", f"token id {bad} is outside the vocabulary of {vocab_size}")
    total = already + len(ids)
    if total >= context_length:
        raise ContextLengthError(
            f"the prompt is {total} tokens but the context holds {context_length} (and at least "
            "one must be left to generate); shorten the prompt or raise the context length"
        )


def check_fits(prompt_tokens: int, max_tokens: int | None, *, context_length: int,
               max_tokens_param: str = "max_tokens") -> None:
    """Prompt plus the tokens asked for must fit the context (OpenAI's and vLLM's 400), for the
    Python API, the CLI and the server alike; `max_tokens_param` is the caller's name for it."""
    if prompt_tokens >= context_length:
        raise ContextLengthError(
            f"this model's context holds {context_length} tokens, but the prompt is {prompt_tokens} "
            "tokens; shorten the prompt or raise the context length"
        )
    if max_tokens is not None and prompt_tokens + max_tokens > context_length:
        raise ContextLengthError(
            f"this model's context holds {context_length} tokens, but {prompt_tokens + max_tokens} were "
            f"asked for ({prompt_tokens} in the prompt, {max_tokens} in {max_tokens_param}); "
            f"lower {max_tokens_param} to at most {context_length - prompt_tokens} or shorten the prompt"
        )


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Tokens of one request and how many of them the runner has computed.

    Prefill and decode are the same thing here: each step runs
    ``tokens[num_computed : num_computed + n]``; logits are wanted when that reaches the end.
    """

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)
    num_computed: int = 0
    seq_id: int | None = None  # the runner slot while running
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: FinishReason | None = None
    arrival: float = field(default_factory=time.monotonic)
    preemptions: int = 0
    num_cached: int = 0  # prompt tokens taken from the prefix cache at admission
    embeddings: list[EmbeddingSpan] = field(default_factory=list)  # image rows of a vision prompt
    draft: list[int] = field(default_factory=list)  # guessed next tokens, verified in the next forward

    def __post_init__(self) -> None:
        if not self.tokens:
            self.tokens = list(self.prompt_ids)

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - len(self.prompt_ids)

    @property
    def num_uncomputed(self) -> int:
        return len(self.tokens) - self.num_computed

    @property
    def shareable_length(self) -> int:
        """How many leading tokens another sequence may share KV with: those before the first
        image, since equal placeholder ids can stand for different images."""
        return min((span.start for span in self.embeddings), default=len(self.tokens))

    @property
    def finished(self) -> bool:
        return self.status is SeqStatus.FINISHED
