"""The token-by-token loop of ONNX Runtime GenAI, over any `Runner`.

    gen = llm.generator(SamplingParams(temperature=0))
    gen.append_tokens(llm.tokenizer.encode("Hello"))
    while not gen.is_done():
        gen.generate_next_token()
        print(llm.tokenizer.decode(gen.get_next_tokens()), end="")

Work is lazy: appended or sampled tokens are fed to the model only when the next logits are
needed, so the loop costs one ``forward`` per token and nothing after the last one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from slmkit.backends.base import Chunk, EmbeddingSpan, Runner, spans_within
from slmkit.engine.sequence import check_prompt_tokens
from slmkit.errors import InvalidParameterError, InvalidRequestError
from slmkit.sampling import Sampler
from slmkit.types import FinishReason, SamplingParams


class Generator:
    """One sequence driven through a runner: append tokens, sample, rewind."""

    def __init__(
        self,
        runner: Runner,
        params: SamplingParams,
        *,
        end_token_ids: frozenset[int] = frozenset(),
        seq_id: int = 0,
        on_close: Callable[[int], None] | None = None,
        constraint=None,
    ):
        if params.num_beams > 1:
            raise InvalidParameterError(
                "num_beams", "the Generator samples one sequence; use LLM.generate for beam search"
            )
        self.runner = runner
        self.params = params
        self.seq_id = seq_id
        self._stop_ids = params.end_token_ids(end_token_ids)
        self._sampler = Sampler(params, runner.vocab_size, constraint)
        self._on_close = on_close
        self._tokens: list[int] = []
        self._embeddings: list[EmbeddingSpan] = []  # image rows, at absolute positions
        self._n_cached = 0  # tokens whose KV the runner holds
        self._prompt_len = 0  # tokens before generation began (penalties count the rest)
        self._logits: np.ndarray | None = None  # predicts the token at position len(_tokens)
        self._next_tokens: list[int] = []
        self.finish_reason: FinishReason | None = None
        self._closed = False
        runner.free(seq_id)

    # -- feeding ---------------------------------------------------------------------------
    def append_tokens(self, token_ids: Sequence[int], embeddings: Sequence[EmbeddingSpan] = ()) -> None:
        """Add prompt tokens (a first prompt, or the next user turn); generation resumes after.
        ``embeddings`` (positions relative to ``token_ids``) replace those tokens' embeddings: the
        image features of a vision prompt."""
        self._check_open()
        ids = [int(t) for t in token_ids]
        check_prompt_tokens(ids, vocab_size=self.runner.vocab_size,
                            context_length=self.runner.context_length, already=len(self._tokens))
        self._embeddings.extend(EmbeddingSpan(len(self._tokens) + span.start, span.rows) for span in embeddings)
        self._tokens.extend(ids)
        self._prompt_len = len(self._tokens)
        self._logits = None
        self.finish_reason = None

    def _compute_logits(self) -> np.ndarray:
        if not self._tokens:
            raise InvalidRequestError("append_tokens before generating: the sequence is empty")
        if self._n_cached == len(self._tokens):
            # Logits of the last cached token are gone (rewind): recompute that one token.
            self.runner.truncate(self.seq_id, self._n_cached - 1)
            self._n_cached -= 1
        step = self.runner.max_batch_tokens
        logits = None
        while self._n_cached < len(self._tokens):
            chunk = self._tokens[self._n_cached : self._n_cached + step]
            last = self._n_cached + len(chunk) == len(self._tokens)
            spans = spans_within(self._embeddings, self._n_cached, self._n_cached + len(chunk))
            out = self.runner.forward([Chunk(self.seq_id, chunk, self._n_cached, want_logits=last, embeddings=spans)])
            self._n_cached += len(chunk)
            if last:
                logits = out[0]
        self._logits = logits
        return logits

    # -- generating ------------------------------------------------------------------------
    def generate_next_token(self) -> int:
        """Sample one token and append it; returns it."""
        self._check_open()
        if self.is_done():
            raise InvalidRequestError(
                f"generation is done ({self.finish_reason}); append tokens or rewind_to() first"
            )
        logits = self._logits if self._logits is not None else self._compute_logits()
        token = self._sampler.sample(logits, self._tokens, self._prompt_len)
        self._logits = None
        self._tokens.append(token)
        self._next_tokens = [token]
        if token in self._stop_ids:
            self.finish_reason = "stop"
        elif self.params.max_tokens is not None and self.generated_count >= self.params.max_tokens:
            self.finish_reason = "length"
        elif len(self._tokens) >= self.runner.context_length:
            self.finish_reason = "length"
        return token

    def is_done(self) -> bool:
        return self.finish_reason is not None

    def get_next_tokens(self) -> list[int]:
        """The token(s) the last `generate_next_token` produced (one per sequence: one here)."""
        return list(self._next_tokens)

    def get_logits(self) -> np.ndarray:
        """A copy of the logits that the next sampled token will come from (``[vocab]``)."""
        self._check_open()
        logits = self._logits if self._logits is not None else self._compute_logits()
        return np.array(logits, dtype=np.float32, copy=True)

    def set_logits(self, logits: np.ndarray) -> None:
        """Replace the logits the next token is sampled from (custom scoring from outside)."""
        self._check_open()
        array = np.asarray(logits, dtype=np.float32).reshape(-1)
        if array.shape != (self.runner.vocab_size,):
            raise InvalidParameterError(
                "logits", f"expected {self.runner.vocab_size} values, got shape {np.shape(logits)}"
            )
        if self._logits is None:
            self._compute_logits()  # bring the KV up to date so later tokens follow on
        self._logits = array.copy()

    def rewind_to(self, length: int) -> None:
        """Keep the first ``length`` tokens; drop later tokens and their KV."""
        self._check_open()
        if not 0 <= length <= len(self._tokens):
            raise InvalidParameterError(
                "length", f"must be between 0 and {len(self._tokens)} (the tokens so far), got {length}"
            )
        del self._tokens[length:]
        self._embeddings = spans_within(self._embeddings, 0, length)
        if self._n_cached > length:
            self.runner.truncate(self.seq_id, length)
            self._n_cached = length
        self._prompt_len = min(self._prompt_len, length)
        self._logits = None
        self._next_tokens = []
        self.finish_reason = None

    # -- inspecting ------------------------------------------------------------------------
    @property
    def token_count(self) -> int:
        return len(self._tokens)

    @property
    def generated_count(self) -> int:
        return len(self._tokens) - self._prompt_len

    def get_sequence(self) -> list[int]:
        return list(self._tokens)

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Free the sequence's KV cells (also done on garbage collection)."""
        if not self._closed:
            self._closed = True
            self.runner.free(self.seq_id)
            if self._on_close:
                self._on_close(self.seq_id)

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidRequestError("this generator is closed")

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
