"""Constrained decoding with llguidance: a grammar (from `slmkit.structure`) compiled for a
model's vocabulary, one matcher per sequence, and the masks of a whole batch at once.

Why llguidance (measured on SmolLM2's 49k vocabulary, benchmarks/structured.py): its masks cost
tens of microseconds a token where llama.cpp's GBNF sampler cost ~10 ms, and it compiles a
schema in milliseconds where XGrammar takes far longer; see BENCHMARKS.md.

- The llguidance tokenizer is built once per model tokenizer (~0.5 s for 49k tokens) and kept
  with it; compiled grammars are kept per (grammar, tokenizer) and each sequence gets a cheap
  copy of the compiled matcher.
- `fill_masks` computes the masks of every constrained row of a batch together (in parallel on
  llguidance's thread pool, outside the GIL, where there are cores for it) and `apply_masks` sets the refused logits to -inf in one
  vectorized step. The mask goes on before any top-k / top-p / min-p truncation.
- After each token the matcher says which tokens the grammar forces next (`forced_tokens`): the
  engine appends them without sampling and runs them as one prefill chunk (fast-forward).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from collections import OrderedDict

import llguidance
import llguidance.numpy
import numpy as np
from llguidance import LLMatcher, LLTokenizer

from slmkit.errors import InvalidRequestError, ModelLoadError

_COMPILED_PER_TOKENIZER = 64  # distinct grammars kept compiled for one model
_lock = threading.Lock()
_vocabs: "weakref.WeakKeyDictionary[object, _Vocab]" = weakref.WeakKeyDictionary()
_executor: llguidance.LLExecutor | None = None
# llguidance's thread pool pays off with cores to spare: on 2 cores, 8 masks took 1.0 ms through
# it and 0.17 ms one after another in this thread (benchmarks/structured.py, a busy machine).
_PARALLEL = (os.cpu_count() or 1) >= 4


class _Vocab:
    """One model tokenizer as llguidance sees it, and the grammars compiled for it."""

    def __init__(self, tokenizer, vocab_size: int):
        self.vocab_size = vocab_size
        self.tokenizer = _llg_tokenizer(tokenizer, vocab_size)
        self.compiled: OrderedDict[str, LLMatcher] = OrderedDict()

    def matcher(self, grammar: str) -> LLMatcher:
        with _lock:
            compiled = self.compiled.get(grammar)
            if compiled is not None:
                self.compiled.move_to_end(grammar)
                return compiled.deep_copy()
        compiled = LLMatcher(self.tokenizer, grammar, log_level=0)
        if compiled.is_error():
            raise InvalidRequestError(f"the output format cannot be used with this model: {compiled.get_error()}",
                                      param="response_format")
        with _lock:
            self.compiled[grammar] = compiled
            while len(self.compiled) > _COMPILED_PER_TOKENIZER:
                self.compiled.popitem(last=False)
        return compiled.deep_copy()


def _llg_tokenizer(tokenizer, vocab_size: int) -> LLTokenizer:
    eos = sorted(tokenizer.special.end_of_generation) or None
    vocab = getattr(tokenizer, "vocab_handle", None)
    if vocab is not None:  # llama.cpp: reads the pieces and tokenizes through llama.cpp itself
        from llguidance.llamacpp import lltokenizer_from_vocab

        with warnings.catch_warnings():  # it reads each token through a call llama.cpp deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(vocab, n_vocab=vocab_size, eos_token=eos)
    spec = getattr(tokenizer, "tokenizer_json", None)
    if spec is not None:  # a Hugging Face tokenizer.json (the torch engine's HF folders)
        return LLTokenizer(spec, n_vocab=vocab_size, eos_token=eos)
    raise ModelLoadError(f"output formats need a llama.cpp or tokenizer.json vocabulary; "
                         f"{type(tokenizer).__name__} has neither")


def _vocab_for(tokenizer, vocab_size: int) -> _Vocab:
    with _lock:
        vocab = _vocabs.get(tokenizer)
    if vocab is None or vocab.vocab_size != vocab_size:
        vocab = _Vocab(tokenizer, vocab_size)
        with _lock:
            _vocabs[tokenizer] = vocab
    return vocab


def _shared_executor() -> llguidance.LLExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = llguidance.LLExecutor()
        return _executor


class GrammarConstraint:
    """One sequence's position in its grammar."""

    def __init__(self, matcher: LLMatcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.mask_seconds = 0.0  # time spent computing this sequence's masks
        self.masks = 0

    def allowed(self) -> np.ndarray:
        """A bool row: which tokens the grammar allows next."""
        return fill_masks([self])[0]

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise InvalidRequestError(f"the output format refused token {token}: {self.matcher.get_error()}",
                                      param="response_format")

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar allows alone from here (consumed by the caller through `accept_forced`)."""
        return self.matcher.compute_ff_tokens()

    def accept_forced(self, tokens: list[int]) -> None:
        if tokens and not self.matcher.consume_tokens(tokens):
            raise InvalidRequestError(f"the output format refused its own forced tokens: {self.matcher.get_error()}",
                                      param="response_format")

    def rollback(self, num_tokens: int) -> None:
        self.matcher.rollback(num_tokens)

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing but ending."""
        return self.matcher.is_stopped()


def make_constraint(tokenizer, params, vocab_size: int | None = None) -> GrammarConstraint | None:
    """The constraint ``params`` asks for on this tokenizer's vocabulary, or None for free text."""
    grammar = params.structure.grammar_text()
    if grammar is None:
        return None
    size = vocab_size or tokenizer.vocab_size
    return GrammarConstraint(_vocab_for(tokenizer, size).matcher(grammar), size)


def fill_masks(constraints: list[GrammarConstraint]) -> np.ndarray:
    """``[len(constraints), vocab]`` bool: each sequence's allowed tokens, in one call."""
    vocab = constraints[0].vocab_size
    bits = np.empty((len(constraints), (vocab + 31) // 32), dtype=np.int32)
    started = time.perf_counter()
    if len(constraints) == 1 or not _PARALLEL:
        for c, row in zip(constraints, bits):
            c.matcher.unsafe_compute_mask_ptr(row.ctypes.data, row.nbytes)
    else:
        llguidance.numpy.fill_next_token_bitmask_par(
            _shared_executor(), [(c.matcher, i) for i, c in enumerate(constraints)], bits)
    allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :vocab].astype(bool)
    share = (time.perf_counter() - started) / len(constraints)
    for c in constraints:
        c.mask_seconds += share
        c.masks += 1
    return allowed


def apply_masks(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """A float32 copy of ``logits`` (``[n, vocab]``) with every refused token at -inf."""
    out = np.array(logits, dtype=np.float32)
    out[~allowed] = -np.inf
    return out
