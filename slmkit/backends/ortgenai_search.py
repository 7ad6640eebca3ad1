"""ORT GenAI's own search behind our `Generator` interface: ``LLM(..., backend="ortgenai",
search="ortgenai")``. The token choice (greedy, top-k / top-p / temperature sampling, repetition
penalty, beam search) happens inside ``og.Generator.generate_next_token`` with the request's
`SamplingParams` passed as its search options; our text side (detokenizer, stop strings) is
unchanged. What ORT's search has no option for is refused, not silently dropped.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from slmkit.engine.sequence import check_prompt_tokens
from slmkit.errors import InvalidParameterError
from slmkit.types import FinishReason, SamplingParams

SEARCH_MODES = ("slmkit", "ortgenai")


def search_options(params: SamplingParams, max_length: int) -> dict:
    """`SamplingParams` as ``og.GeneratorParams.set_search_options`` keywords (REFERENCE §5f)."""
    unsupported = {
        "min_p": params.min_p != 0.0, "frequency_penalty": params.frequency_penalty != 0.0,
        "presence_penalty": params.presence_penalty != 0.0, "logit_bias": bool(params.logit_bias),
        "logits_processors": bool(params.logits_processors), "logprobs": params.logprobs is not None,
        "response_format": params.response_format != "text",
    }
    asked = [name for name, used in unsupported.items() if used]
    if asked:
        raise InvalidParameterError(asked[0], f"ORT GenAI's own search has no {', '.join(asked)}; use slmkit's "
                                              "sampling (search='slmkit') for them")
    options = {"max_length": max_length, "repetition_penalty": params.repetition_penalty}
    if params.num_beams > 1:
        options.update(num_beams=params.num_beams, do_sample=False, length_penalty=params.length_penalty,
                       num_return_sequences=1, early_stopping=True)
    elif params.temperature == 0:
        options.update(do_sample=False)
    else:
        options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                       top_k=params.top_k if params.top_k > 0 else 1 << 30)
    if params.seed is not None:
        options["random_seed"] = params.seed
    # ORT's only way past its end tokens is forbidding them until min_length (ours generates the
    # end token and goes on): with ignore_eos the two searches differ from the first end token on.
    if params.ignore_eos:
        options["min_length"] = max_length
    return options


class OrtGenAISearch:
    """One sequence decoded by ORT GenAI's search; the `Generator` methods `LLM` streams through."""

    def __init__(self, model, params: SamplingParams, *, context_length: int, end_token_ids: frozenset[int],
                 seq_id: int = 0, on_close: Callable[[int], None] | None = None):
        self._og = model.og_model
        self._og_module = __import__("onnxruntime_genai")
        self.params = params
        self.context_length = context_length
        self.vocab_size = int(model.config.get("model", {}).get("vocab_size") or model.tokenizer.vocab_size)
        self.seq_id = seq_id
        self._stop_ids = params.end_token_ids(end_token_ids)
        self._on_close = on_close
        self._generator = None
        self._prompt_len = 0
        self._generated: list[int] = []
        self.finish_reason: FinishReason | None = None

    def append_tokens(self, token_ids: Sequence[int], embeddings: Sequence = ()) -> None:
        if embeddings:
            raise InvalidParameterError("images", "ORT GenAI's own search runs text models only here")
        ids = [int(t) for t in token_ids]
        check_prompt_tokens(ids, vocab_size=self.vocab_size, context_length=self.context_length)
        if self._generator is not None:
            raise InvalidParameterError("prompt", "ORT GenAI's search takes one prompt per generator")
        budget = self.params.max_tokens if self.params.max_tokens is not None else self.context_length
        max_length = min(self.context_length, len(ids) + budget)
        options = search_options(self.params, max_length)
        gen_params = self._og_module.GeneratorParams(self._og)
        gen_params.set_search_options(**options)
        self._generator = self._og_module.Generator(self._og, gen_params)
        self._generator.append_tokens(np.asarray(ids, dtype=np.int32))
        self._prompt_len = len(ids)
        self._max_length = max_length

    def is_done(self) -> bool:
        return self.finish_reason is not None

    def generate_next_token(self) -> int:
        gen = self._generator
        gen.generate_next_token()
        if self.params.num_beams > 1:  # the best beam is only known at the end: run it to completion
            while not gen.is_done():
                gen.generate_next_token()
            tokens = [int(t) for t in gen.get_sequence(0)[self._prompt_len:]]
            self._generated = tokens
            self.finish_reason = "stop" if tokens and tokens[-1] in self._stop_ids else "length"
            return tokens[-1] if tokens else -1
        token = int(gen.get_next_tokens()[0])
        self._generated.append(token)
        if token in self._stop_ids and not self.params.ignore_eos:
            self.finish_reason = "stop"
        elif gen.is_done() or self._prompt_len + len(self._generated) >= self._max_length:
            self.finish_reason = "length"
        return token

    @property
    def generated_tokens(self) -> list[int]:
        return list(self._generated)

    @property
    def generated_count(self) -> int:
        return len(self._generated)

    def close(self) -> None:
        self._generator = None
        if self._on_close is not None:
            self._on_close(self.seq_id)
            self._on_close = None

    def __enter__(self) -> "OrtGenAISearch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
