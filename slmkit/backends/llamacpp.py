"""The default CPU engine: llama.cpp through llama-cpp-python's low-level API.

We drive ``llama_decode`` on our own batches (many sequences, one call per step) and sample in
our own code; ``Llama.create_completion`` measured 17 % slower here and cannot batch. Flash
attention stays on llama.cpp's ``auto`` (worth 8-25 % on decode; ``Llama()`` turns it off).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import llama_cpp
import numpy as np

from slmkit.backends.base import Chunk, SpecialTokens, check_runner_options
from slmkit.backends.gguf_header import check_gguf
from slmkit.backends.threads import ThreadGovernor, allowed_cores
from slmkit.backends.llama_log import init_llama, recent_errors
from slmkit.errors import ContextLengthError, InvalidParameterError, ModelLoadError, SlmkitError

FILE_TYPES = {
    getattr(llama_cpp, name): name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").lower()
    for name in dir(llama_cpp)
    if name.startswith("LLAMA_FTYPE_") and name not in ("LLAMA_FTYPE_GUESSED",)
}


def default_threads() -> int:
    """The cores this process may run on (respects taskset / cgroup CPU sets)."""
    return allowed_cores()


@dataclass
class ModelInfo:
    """What a GGUF says about itself (shown by ``slm show``)."""

    path: Path
    architecture: str
    description: str
    parameters: int
    size_bytes: int
    file_type: str
    context_length: int
    chat_template: str | None
    metadata: dict[str, str] = field(default_factory=dict)


class LlamaCppModel:
    """Loaded GGUF weights plus vocabulary. Contexts (runners) are created from it."""

    def __init__(self, path: str | Path, *, vocab_only: bool = False):
        init_llama()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        check_gguf(self.path)  # llama.cpp aborts the process on some broken files; refuse them first
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = vocab_only
        started = time.perf_counter()
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            why = recent_errors() or "unknown reason"
            raise ModelLoadError(
                f"cannot load {self.path}: not a valid GGUF file or an unsupported architecture "
                f"(llama.cpp: {why}). Re-import the file, or check it with `slm show`."
            )
        self.load_seconds = time.perf_counter() - started
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.tokenizer = LlamaCppTokenizer(self._vocab)
        self.info = self._read_info()

    def _read_info(self) -> ModelInfo:
        model = self._model
        metadata = {}
        buf = ctypes.create_string_buffer(4096)
        for i in range(llama_cpp.llama_model_meta_count(model)):
            llama_cpp.llama_model_meta_key_by_index(model, i, buf, len(buf))
            key = buf.value.decode("utf-8", errors="replace")
            llama_cpp.llama_model_meta_val_str_by_index(model, i, buf, len(buf))
            metadata[key] = buf.value.decode("utf-8", errors="replace")
        llama_cpp.llama_model_desc(model, buf, len(buf))
        template = llama_cpp.llama_model_chat_template(model, None)
        return ModelInfo(
            path=self.path,
            architecture=metadata.get("general.architecture", "unknown"),
            description=buf.value.decode("utf-8", errors="replace"),
            parameters=int(llama_cpp.llama_model_n_params(model)),
            size_bytes=self.path.stat().st_size,
            # A vocab-only load reports all_f32; the header's general.file_type is the truth.
            file_type=FILE_TYPES.get(int(metadata.get("general.file_type", -1)),
                                     FILE_TYPES.get(llama_cpp.llama_model_ftype(model), "unknown")),
            context_length=int(llama_cpp.llama_model_n_ctx_train(model)),
            chat_template=template.decode("utf-8", errors="replace") if template else None,
            metadata=metadata,
        )

    def create_runner(self, **options) -> "LlamaCppRunner":
        return LlamaCppRunner(self, **options)

    def close(self) -> None:
        if getattr(self, "_model", None):
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()


class LlamaCppTokenizer:
    """Text <-> ids through the model's own vocabulary (BPE, SentencePiece, ...)."""

    def __init__(self, vocab):
        self._vocab = vocab
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._piece_cache: dict[int, bytes] = {}
        self._buf = ctypes.create_string_buffer(256)

        def token_or_none(value: int) -> int | None:
            return None if value < 0 else int(value)

        eog = frozenset(t for t in range(self.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, t))
        self.special = SpecialTokens(
            bos=token_or_none(llama_cpp.llama_vocab_bos(vocab)),
            eos=token_or_none(llama_cpp.llama_vocab_eos(vocab)),
            eot=token_or_none(llama_cpp.llama_vocab_eot(vocab)),
            end_of_generation=eog,
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        )

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            out = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), out, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(out[:n])
            capacity = -n

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        ids = list(token_ids)
        for token_id in ids:
            self._check_id(token_id)
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        capacity = 8 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(capacity)
            n = llama_cpp.llama_detokenize(
                self._vocab, arr, len(ids), buf, capacity, skip_special, not skip_special
            )
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            capacity = -n

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._piece_cache.get(token_id)
        if piece is None:
            self._check_id(token_id)
            piece = self._piece(token_id, special=False)
            self._piece_cache[token_id] = piece
        return piece

    def token_text(self, token_id: int) -> str:
        self._check_id(token_id)
        return self._piece(token_id, special=True).decode("utf-8", errors="replace")

    @property
    def vocab_handle(self):
        """The llama.cpp vocabulary (for grammar constraints)."""
        return self._vocab

    def token_id(self, text: str) -> int | None:
        """The id of a token spelled exactly ``text`` (``<|im_end|>``), or None."""
        ids = self.encode(text, add_special=False, parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def _piece(self, token_id: int, *, special: bool) -> bytes:
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, self._buf, len(self._buf), 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, big, len(big), 0, special)
            return big.raw[:n]
        return self._buf.raw[:n]

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise InvalidParameterError(
                "token_ids", f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )


class LlamaCppRunner:
    """One llama.cpp context holding the KV cache of up to ``max_sequences`` sequences.

    ``unified_kv=True`` (the single-stream API): all sequences share one pool of
    ``context_length`` cells. ``unified_kv=False`` (the batching engine): each sequence gets a
    KV stream of its own with ``context_length`` cells. Measured on SmolLM2 with 16 greedy
    requests batched: per-sequence streams gave 16/16 answers identical to running alone, the
    shared pool 6/16 (attention sums over interleaved cells in another order).

    The batch is our own numpy-backed ``llama_batch`` (never ``llama_batch_free``d): filling it
    is a few slice assignments instead of a ctypes call per token.
    """

    def __init__(
        self,
        model: LlamaCppModel,
        *,
        context_length: int | None = None,
        max_sequences: int = 16,
        max_batch_tokens: int = 512,
        threads: int | None = None,
        flash_attention: str = "auto",
        unified_kv: bool = True,
    ):
        context = check_runner_options(context_length=context_length, threads=threads, max_sequences=max_sequences,
                                       trained_context=model.info.context_length)
        self.model = model
        self.max_sequences = max_sequences
        self.unified_kv = unified_kv
        self.max_batch_tokens = min(max_batch_tokens, context)
        self.threads = threads or default_threads()
        # Threads left to us are re-chosen between steps from the cores actually free.
        self._governor = None if threads else ThreadGovernor(self.threads)
        self.vocab_size = model.tokenizer.vocab_size

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context if unified_kv else context * max_sequences
        params.n_batch = self.max_batch_tokens
        params.n_ubatch = self.max_batch_tokens
        params.n_seq_max = max_sequences
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.kv_unified = unified_kv
        params.no_perf = True
        params.flash_attn_type = {
            "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attention]
        self._ctx = llama_cpp.llama_init_from_model(model._model, params)
        if not self._ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens "
                f"({recent_errors() or 'out of memory?'}); try a smaller --context-length"
            )
        # llama.cpp may round the context up (to 256); we hold sequences to what was asked.
        self.context_length = min(context, int(llama_cpp.llama_n_ctx_seq(self._ctx)))
        self.kv_cells = self.context_length * (1 if unified_kv else max_sequences)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._lengths = [0] * max_sequences
        self._alloc_batch(self.max_batch_tokens)

    def _alloc_batch(self, n: int) -> None:
        self._tokens = np.zeros(n, dtype=np.int32)
        self._pos = np.zeros(n, dtype=np.int32)
        self._n_seq_id = np.ones(n, dtype=np.int32)
        self._seq_ids = np.zeros(n, dtype=np.int32)
        self._want = np.zeros(n, dtype=np.int8)
        self._arange = np.arange(n, dtype=np.int32)
        int32_p = ctypes.POINTER(ctypes.c_int32)
        base = self._seq_ids.ctypes.data
        self._seq_id_ptrs = (int32_p * n)(*[ctypes.cast(base + 4 * i, int32_p) for i in range(n)])
        batch = llama_cpp.llama_batch()
        batch.token = self._tokens.ctypes.data_as(int32_p)
        batch.embd = None
        batch.pos = self._pos.ctypes.data_as(int32_p)
        batch.n_seq_id = self._n_seq_id.ctypes.data_as(int32_p)
        batch.seq_id = ctypes.cast(self._seq_id_ptrs, ctypes.POINTER(int32_p))
        batch.logits = self._want.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self._batch = batch

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        # With a KV stream per sequence, llama.cpp splits a batch whose sequences are not in
        # stream order into more micro-batches: measured here, 8 decoding sequences in arrival
        # order took 40 ms a step against 27 ms in slot order. So the batch goes in slot order
        # and the logit rows come back in the caller's order.
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].seq_id)
        if order == list(range(len(chunks))):
            return self._forward(chunks)
        logits = self._forward([chunks[i] for i in order])
        rows, start = [None] * len(chunks), 0
        for i in order:
            k = len(chunks[i].token_ids) if chunks[i].all_logits else int(chunks[i].want_logits)
            rows[i] = range(start, start + k)
            start += k
        return logits[[r for i in range(len(chunks)) for r in rows[i]]]

    def _forward(self, chunks: list[Chunk]) -> np.ndarray:
        n = 0
        n_out = 0
        for chunk in chunks:
            k = len(chunk.token_ids)
            if k == 0:
                raise InvalidParameterError("chunk", f"empty chunk for sequence {chunk.seq_id}")
            if n + k > self.max_batch_tokens:
                raise InvalidParameterError(
                    "chunk", f"batch of {n + k} tokens exceeds max_batch_tokens={self.max_batch_tokens}"
                )
            if chunk.start_pos != self._lengths[chunk.seq_id]:
                raise SlmkitError(
                    f"sequence {chunk.seq_id} holds {self._lengths[chunk.seq_id]} tokens, "
                    f"chunk starts at {chunk.start_pos}"
                )
            if chunk.start_pos + k > self.context_length:
                raise ContextLengthError(
                    f"sequence {chunk.seq_id} would reach {chunk.start_pos + k} tokens; "
                    f"the context holds {self.context_length}"
                )
            if k == 1:
                self._tokens[n] = chunk.token_ids[0]
                self._pos[n] = chunk.start_pos
                self._seq_ids[n] = chunk.seq_id
                self._want[n] = chunk.want_logits or chunk.all_logits
            else:
                self._tokens[n : n + k] = chunk.token_ids
                self._pos[n : n + k] = self._arange[:k] + chunk.start_pos
                self._seq_ids[n : n + k] = chunk.seq_id
                self._want[n : n + k] = chunk.all_logits
                self._want[n + k - 1] = chunk.want_logits or chunk.all_logits
            n += k
            n_out += k if chunk.all_logits else chunk.want_logits
        self._batch.n_tokens = n
        if self._governor is not None:
            wanted = self._governor.threads()
            if wanted != self.threads:
                llama_cpp.llama_set_n_threads(self._ctx, wanted, wanted)
                self.threads = wanted
        started = time.perf_counter()
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if self._governor is not None:
            self._governor.step_done(n, time.perf_counter() - started)
        if rc != 0:
            self._resync_lengths(chunks)
            if rc == 1:
                raise ContextLengthError(
                    f"the KV cache ({self.context_length} cells) is full; free sequences or raise "
                    "the context length"
                )
            raise SlmkitError(f"llama_decode failed with code {rc} ({recent_errors()})")
        for chunk in chunks:
            self._lengths[chunk.seq_id] += len(chunk.token_ids)
        if n_out == 0:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_out, self.vocab_size))

    def _resync_lengths(self, chunks: list[Chunk]) -> None:
        # A failed decode may leave finished micro-batches in memory: drop what we did not count.
        for chunk in chunks:
            llama_cpp.llama_memory_seq_rm(self._memory, chunk.seq_id, self._lengths[chunk.seq_id], -1)

    def truncate(self, seq_id: int, length: int) -> None:
        if length < self._lengths[seq_id]:
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, length, -1)
            self._lengths[seq_id] = max(0, length)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        if length > self._lengths[src]:
            raise SlmkitError(f"sequence {src} holds {self._lengths[src]} tokens, cannot copy {length}")
        self.free(dst)
        if length > 0:
            if self.unified_kv:  # cells are shared: the copy only tags them with dst
                llama_cpp.llama_memory_seq_cp(self._memory, src, dst, 0, length)
            else:  # across KV streams llama.cpp copies whole streams only; then cut the tail
                llama_cpp.llama_memory_seq_cp(self._memory, src, dst, -1, -1)
                llama_cpp.llama_memory_seq_rm(self._memory, dst, length, -1)
        self._lengths[dst] = length

    def free(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._lengths[seq_id] = 0

    def sequence_length(self, seq_id: int) -> int:
        return self._lengths[seq_id]

    def used_cells(self) -> int:
        # Sequences sharing a copied prefix share cells; this counts per sequence (an upper bound).
        return sum(self._lengths)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
