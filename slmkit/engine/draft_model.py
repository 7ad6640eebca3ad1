"""Draft-model speculation: a smaller model with the target's tokenizer guesses each sequence's
next tokens; the engine verifies them in the target's batched forward exactly as it verifies
prompt-lookup drafts (`engine.speculative`).

The drafter works on all drafting sequences of a step together. It keeps, per sequence slot,
the tokens whose KV its own runner holds; a proposal first cuts that KV back to the common
prefix with the sequence's tokens and feeds the rest (one batched forward catches every
sequence up: the tokens accepted last step and the target's own token, a new prompt, a reused
slot), then runs up to k greedy steps, each one batched forward over the sequences still
drafting. The draft is the drafter's argmax: deterministic, so a point-mass proposal, for which
`verify_sampled` keeps sampled output distributed exactly as the target's and greedy output
token for token the target's.

The drafter's KV follows the target's slot: it is kept while the target keeps the slot's KV
(running, or as a cached prefix a later request may reuse) and freed when the target frees it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import AbstractSet, Sequence

from slmkit.backends.base import Chunk, Runner
from slmkit.engine.scheduler import common_prefix_length

log = logging.getLogger("slmkit.engine")


@dataclass
class DraftRequest:
    """One sequence asking for a draft this step."""

    slot: int  # its runner slot: the same slot number in the target and the draft runner
    tokens: Sequence[int]  # all its tokens so far (the last one not yet run through the target)
    n: int  # tokens to draft, >= 1
    end_ids: AbstractSet[int] = frozenset()  # drafting stops after one of these (it would end the request)


@dataclass(eq=False)
class DraftModelProposer:
    """Drafts for many sequences at once from a draft model's `Runner` (same slots as the target's).

    ``vocab_size``: the target's; the drafter's argmax is taken over those ids only (a runner may
    pad its logits). ``max_chunk_per_sequence`` holds the drafter's catch-up chunks to the
    engine's, so that batch-invariant mode gives the same drafts whatever the batch.
    """

    runner: Runner
    vocab_size: int
    max_chunk_per_sequence: int | None = None
    seconds: float = 0.0  # spent in the drafter's forwards and argmax
    forwards: int = 0
    _held: dict[int, list[int]] = field(default_factory=dict)  # slot -> tokens whose KV the drafter holds

    def propose(self, requests: list[DraftRequest]) -> dict[int, list[int]]:
        """``{slot: draft tokens}``; empty drafts for every request if the drafter fails (logged:
        the target goes on decoding one token at a time)."""
        if not requests:
            return {}
        started = time.perf_counter()
        drafts: dict[int, list[int]] = {r.slot: [] for r in requests}
        try:
            tokens = self._feed([(r.slot, self._catch_up(r)) for r in requests])
            live = list(requests)
            while True:
                still = []
                for r, token in zip(live, tokens):
                    drafts[r.slot].append(token)
                    if len(drafts[r.slot]) < r.n and token not in r.end_ids:
                        still.append(r)
                if not still:
                    break
                live = still
                tokens = self._feed([(r.slot, drafts[r.slot][-1:]) for r in live])
        except Exception as exc:  # noqa: BLE001 - drafting is an optimisation; the target decodes on
            log.warning("the draft model failed (%s: %s); these sequences decode without drafts this step",
                        type(exc).__name__, exc)
            for r in requests:
                self.forget(r.slot)
            drafts = {}
        finally:
            self.seconds += time.perf_counter() - started
        return drafts

    def forget(self, slot: int) -> None:
        """Free the drafter's KV of a slot (the target freed its own)."""
        if self._held.pop(slot, None) is not None:
            self.runner.free(slot)

    def held(self, slot: int) -> list[int]:
        """The tokens whose KV the drafter holds for a slot."""
        return list(self._held.get(slot, []))

    def _catch_up(self, request: DraftRequest) -> list[int]:
        """Cut the slot's KV back to the common prefix with the sequence and return what must be
        fed: at least the last token, whose logits give the first draft token."""
        held = self._held.setdefault(request.slot, [])
        keep = common_prefix_length(held, list(request.tokens), len(request.tokens) - 1)
        if len(held) > keep:
            self.runner.truncate(request.slot, keep)
            del held[keep:]
        return list(request.tokens[keep:])

    def _feed(self, pieces: list[tuple[int, list[int]]]) -> list[int]:
        """Run each slot's tokens; the drafter's argmax after each piece's last token, in order.
        As few forwards as the batch size and chunk limit allow (one, while decoding)."""
        budget_per_forward = self.runner.max_batch_tokens
        cap = self.max_chunk_per_sequence or budget_per_forward
        done = [0] * len(pieces)
        argmax = [0] * len(pieces)
        while any(done[i] < len(tokens) for i, (_, tokens) in enumerate(pieces)):
            budget, batch = budget_per_forward, []
            for i, (slot, tokens) in enumerate(pieces):
                n = min(len(tokens) - done[i], cap, budget)
                if n <= 0:
                    continue
                held = self._held[slot]
                last = done[i] + n == len(tokens)
                batch.append((i, Chunk(slot, tokens[done[i] : done[i] + n], len(held), want_logits=last)))
                held.extend(tokens[done[i] : done[i] + n])
                done[i] += n
                budget -= n
            logits = self.runner.forward([chunk for _, chunk in batch])
            self.forwards += 1
            wanted = [i for i, chunk in batch if chunk.want_logits]
            if wanted:
                for i, token in zip(wanted, logits[:, : self.vocab_size].argmax(axis=1).tolist()):
                    argmax[i] = token
        return argmax
