"""`TorchRunner`: the `Runner` protocol over our own PyTorch models (slmkit/models/).

Each forward runs the decode chunks (one token each) as one padded batch and every prompt chunk
on its own, so a long prefill never pads short decodes to its width. KV lives in a preallocated
`KVCache` with one row per sequence. Longrope models (Phi-3/3.5) switch to their long factors
once a sequence passes ``original_max_position_embeddings``; the cached keys of that sequence
were rotated with the short factors, so the runner re-prefills them (as transformers does).

A chunk's `EmbeddingSpan`s (image features of a vision model's prompt) replace the token
embeddings of the positions they cover; the runner keeps them with the token history, so a
re-prefill, a rewind or a prefix copy treats them like the tokens they stand for.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from slmkit.backends.base import Chunk, EmbeddingSpan, check_chunks, spans_within
from slmkit.backends.threads import ThreadGovernor
from slmkit.errors import InvalidParameterError, SlmkitError
from slmkit.models.cache import ForwardBatch, KVCache
from slmkit.models.llama import CausalLM


class TorchRunner:
    def __init__(self, model: CausalLM, *, context_length: int, max_sequences: int = 16,
                 max_batch_tokens: int = 512, threads: int | None = None):
        if max_sequences < 1:
            raise InvalidParameterError("max_sequences", "must be >= 1")
        if context_length < 16:
            raise InvalidParameterError("context_length", f"must be >= 16, got {context_length}")
        if threads:
            torch.set_num_threads(threads)
        # Intra-op threads left to us follow the cores actually free, as llama.cpp's do.
        self._governor = None if threads else ThreadGovernor(torch.get_num_threads())
        config = model.config
        param = next(model.parameters())
        self.model = model
        self.device, self.dtype = param.device, param.dtype
        self.vocab_size = config.vocab_size
        self.max_sequences = max_sequences
        self.context_length = context_length
        self.kv_cells = context_length * max_sequences
        self.max_batch_tokens = min(max_batch_tokens, context_length)
        self.rope = config.rope
        self.cache = KVCache(config.num_layers, max_sequences, config.num_kv_heads, context_length,
                             config.head_dim, self.dtype, self.device)
        self._tokens: list[list[int]] = [[] for _ in range(max_sequences)]  # what each KV row holds
        self._long = [False] * max_sequences  # rope regime the cached keys were computed with
        self._spans: list[list[EmbeddingSpan]] = [[] for _ in range(max_sequences)]  # embedding rows held

    # -- Runner protocol ------------------------------------------------------------------
    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        check_chunks(self, chunks, self._tokens)
        if self._governor is None:
            return self._forward(chunks)
        wanted = self._governor.threads()
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
        started = time.perf_counter()
        logits = self._forward(chunks)
        self._governor.step_done(sum(len(c.token_ids) for c in chunks), time.perf_counter() - started)
        return logits

    def _forward(self, chunks: list[Chunk]) -> np.ndarray:
        with torch.inference_mode():
            for chunk in chunks:
                self._match_rope_regime(chunk.seq_id, chunk.start_pos + len(chunk.token_ids))
            decodes = [i for i, c in enumerate(chunks) if len(c.token_ids) == 1]
            groups = ([decodes] if decodes else []) + [[i] for i, c in enumerate(chunks) if len(c.token_ids) > 1]
            rows: dict[int, torch.Tensor] = {}
            for group in groups:
                logits = self._run([chunks[i] for i in group])
                rows.update((i, out) for i, out in zip(group, logits) if out is not None)
        for chunk in chunks:
            self._tokens[chunk.seq_id].extend(int(t) for t in chunk.token_ids)
            self._spans[chunk.seq_id].extend(spans_within(chunk.embeddings, chunk.start_pos,
                                                          chunk.start_pos + len(chunk.token_ids)))
        if not rows:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        return torch.cat([rows[i] for i in sorted(rows)]).float().cpu().numpy()

    def truncate(self, seq_id: int, length: int) -> None:
        del self._tokens[seq_id][max(0, length):]
        self._spans[seq_id] = spans_within(self._spans[seq_id], 0, length)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        if length > len(self._tokens[src]):
            raise SlmkitError(f"sequence {src} holds {len(self._tokens[src])} tokens, cannot copy {length}")
        if src != dst and length > 0:
            with torch.inference_mode():
                self.cache.copy(src, dst, length)
        self._tokens[dst] = self._tokens[src][:length]
        self._long[dst] = self._long[src]
        self._spans[dst] = spans_within(self._spans[src], 0, length)

    def free(self, seq_id: int) -> None:
        self._tokens[seq_id] = []
        self._long[seq_id] = False
        self._spans[seq_id] = []

    def sequence_length(self, seq_id: int) -> int:
        return len(self._tokens[seq_id])

    def used_cells(self) -> int:
        return sum(map(len, self._tokens))

    def close(self) -> None:
        self.cache = None

    # -- internals ------------------------------------------------------------------------

    def _match_rope_regime(self, seq_id: int, end: int) -> None:
        """Recompute a sequence's cached keys when it crosses the longrope switch point (either way)."""
        long = self.rope.uses_long(end)
        if long == self._long[seq_id]:
            return
        self._long[seq_id] = long
        history = self._tokens[seq_id]
        for start in range(0, len(history), self.max_batch_tokens):
            piece = history[start : start + self.max_batch_tokens]
            self._run([Chunk(seq_id, piece, start, want_logits=False, embeddings=self._spans[seq_id])])

    def _run(self, chunks: list[Chunk]) -> list[torch.Tensor | None]:
        """One padded forward; per chunk, logits ``[rows, vocab]`` of its last token (every token
        for ``all_logits``), or None when it wants none."""
        lengths = [len(c.token_ids) for c in chunks]
        width = max(lengths)
        ids = torch.zeros((len(chunks), width), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : lengths[row]] = torch.as_tensor(chunk.token_ids, dtype=torch.long)
        use_long = [self._long[c.seq_id] for c in chunks] if self.rope.kind == "longrope" else None
        batch = ForwardBatch.build([c.start_pos for c in chunks], lengths, [c.seq_id for c in chunks],
                                   self.device, use_long)
        ids = ids.to(self.device)
        embeds = None
        if any(c.embeddings for c in chunks):
            embeds = self.model.model.embed_tokens(ids)
            for row, chunk in enumerate(chunks):
                for span in spans_within(chunk.embeddings, chunk.start_pos, chunk.start_pos + lengths[row]):
                    embeds[row, span.start - chunk.start_pos : span.end - chunk.start_pos] = span.rows.to(embeds.dtype)
        hidden = self.model.hidden(ids, batch, self.cache, inputs_embeds=embeds)
        # One LM-head matmul for all wanted rows: the head is often the largest weight (49k x 576
        # for SmolLM2), and reading it once per chunk would cost a whole extra pass each time.
        spans, rows = [], []
        for row, chunk in enumerate(chunks):
            first = 0 if chunk.all_logits else lengths[row] - 1
            if chunk.all_logits or chunk.want_logits:
                spans.append((row, lengths[row] - first))
                rows.append(hidden[row, first : lengths[row]])
            else:
                spans.append((row, 0))
        if not rows:
            return [None] * len(chunks)
        logits = self.model.logits(torch.cat(rows)).split([n for _, n in spans if n])
        pieces = iter(logits)
        return [next(pieces) if n else None for _, n in spans]

