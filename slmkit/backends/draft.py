"""A draft model: a second, smaller model loaded next to the target to propose its next tokens.

It loads through the same code as the target (`load_model`, then a runner sized like the
target's: the same sequence slots, context length and batch size), on an engine whose runner
`engine.draft_model.DraftModelProposer` can drive (llama.cpp, or torch). Its tokenizer must be
the target's — the same vocabulary size and the same bytes for every token id — since the
draft's token ids are verified as the target's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slmkit.backends.base import Runner, Tokenizer
from slmkit.backends.loading import BackendOptions, engines_for, load_model
from slmkit.errors import InvalidParameterError

DRAFT_ENGINES = ("llamacpp", "torch")  # engines whose runner drafts (tested: llama.cpp; torch runs GGUFs too)


@dataclass(eq=False)
class DraftModel:
    name: str  # the store reference or path it was loaded from
    model: Any  # LlamaCppModel or TorchModel
    runner: Runner

    def close(self) -> None:
        self.runner.close()
        self.model.close()


def load_draft_model(name: str, path: Path, options: BackendOptions, *, target_name: str,
                     target_tokenizer: Tokenizer, target_runner: Runner, **runner_options) -> DraftModel:
    """Load `path` as a drafter for the target: on the target's engine when it can run the file
    (else the one ``auto`` picks), refused unless that engine drafts and the tokenizers agree.
    `runner_options` are the target's (threads, ``unified_kv``)."""
    engines = engines_for(Path(path))
    options = replace(options, backend=options.backend if options.backend in engines else "auto")
    backend = options.resolve(Path(path))
    if backend not in DRAFT_ENGINES:
        raise InvalidParameterError("draft_model", f"{name} runs on the {backend} engine; a draft model runs "
                                    f"on {' or '.join(DRAFT_ENGINES)} (a GGUF file, or a Hugging Face folder "
                                    "the torch engine implements)")
    model = load_model(path, options)
    try:
        check_same_tokenizer(target_tokenizer, model.tokenizer, target_name=target_name, draft_name=name)
        runner = model.create_runner(context_length=target_runner.context_length,
                                     max_sequences=target_runner.max_sequences,
                                     max_batch_tokens=target_runner.max_batch_tokens, **runner_options)
    except Exception:
        model.close()
        raise
    return DraftModel(name, model, runner)


def check_same_tokenizer(target: Tokenizer, draft: Tokenizer, *, target_name: str, draft_name: str) -> None:
    """Refuse a drafter whose token ids mean other text than the target's (the first id that
    differs is named)."""
    if target.vocab_size != draft.vocab_size:
        raise InvalidParameterError(
            "draft_model", f"{draft_name} has a vocabulary of {draft.vocab_size} tokens and {target_name} "
            f"{target.vocab_size}: a draft model must use the target's tokenizer")
    for token_id in range(target.vocab_size):
        ours, theirs = target.token_bytes(token_id), draft.token_bytes(token_id)
        if ours != theirs or target.token_text(token_id) != draft.token_text(token_id):
            raise InvalidParameterError(
                "draft_model", f"{draft_name} and {target_name} have different tokenizers: token id {token_id} is "
                f"{draft.token_text(token_id)!r} in the draft and {target.token_text(token_id)!r} in the target; "
                "a draft model must use the target's tokenizer")
