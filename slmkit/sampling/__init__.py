"""Token selection: logits processors, the per-sequence `Sampler`, and beam search."""

from slmkit.sampling.beam import Beam, beam_search
from slmkit.sampling.processors import (
    Processor,
    Warper,
    apply_processors,
    apply_warpers,
    make_logits_processors,
    make_logits_warpers,
)
from slmkit.sampling.grammar import GrammarConstraint, apply_masks, fill_masks, make_constraint
from slmkit.sampling.sampler import Sampler, log_softmax, top_logprobs

__all__ = [
    "Beam",
    "GrammarConstraint",
    "apply_masks",
    "fill_masks",
    "make_constraint",
    "Processor",
    "Sampler",
    "Warper",
    "apply_processors",
    "apply_warpers",
    "beam_search",
    "log_softmax",
    "make_logits_processors",
    "make_logits_warpers",
    "top_logprobs",
]
