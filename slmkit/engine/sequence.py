"""One request's state inside the batching engine."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from slmkit.types import FinishReason, SamplingParams


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
    def finished(self) -> bool:
        return self.status is SeqStatus.FINISHED
