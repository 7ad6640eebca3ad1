"""Hugging Face Transformers as a `Runner`: any ``AutoModelForCausalLM`` architecture our native
torch engine lacks (Qwen2, Mistral, Gemma, ...) computes logits; our tokenizer, templates,
sampling, stop strings and scheduler stay in charge. ``--backend transformers`` also runs the
architectures we implement ourselves (Phi-3, Llama): it is the reference our engine is checked
against.

One ``DynamicCache`` per sequence, one forward per chunk: sequences of different lengths in one
forward would need padded, masked caches that transformers builds only inside ``generate``.
Continuous batching still works (sequences join and leave at any step); a step costs the sum of
its sequences. ``truncate`` crops the cache (``DynamicCache.crop``); where a layer cannot crop
(a sliding window already full) the sequence's kept tokens are run again. Longrope models
(Phi-3/3.5) recompute a sequence's cache when it first passes ``original_max_position_embeddings``,
as transformers' own ``generate`` does.

Remote code (a folder whose ``config.json`` has ``auto_map``: Phi-3-small's block-sparse model,
its tiktoken tokenizer) runs only when asked (``trust_remote_code``), and only from the folder:
nothing is downloaded, and an ``auto_map`` naming another repository is refused.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from slmkit.backends.base import Chunk, check_runner_options
from slmkit.backends.llamacpp import ModelInfo
from slmkit.backends.per_sequence import PerSequenceRunner
from slmkit.errors import BackendUnavailableError, InvalidParameterError, ModelLoadError, SlmkitError

EXTRA = "transformers"


def missing_extra_message(module: str) -> str:
    return f"the transformers engine needs the Python package {module}: pip install 'slmkit[{EXTRA}]'"


def import_transformers():
    """(torch, transformers), or a one-line `BackendUnavailableError` naming the extra."""
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(missing_extra_message("torch")) from exc
    try:
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(missing_extra_message("transformers")) from exc
    return torch, transformers


def read_folder_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict ({} when missing or unreadable: the loader says why)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def check_remote_code(folder: Path, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse code a folder brings unless asked for, and code from anywhere but the folder."""
    auto_map = config.get("auto_map")
    if not auto_map:
        return
    if not trust_remote_code:
        raise ModelLoadError(f"{folder} brings its own model code (config.json auto_map); read its .py files, "
                             f"then pass --trust-remote-code (Python: trust_remote_code=True) to run it")
    references = auto_map.values() if isinstance(auto_map, dict) else []
    elsewhere = sorted({r for r in references if isinstance(r, str) and "--" in r})
    if elsewhere:  # "owner/repo--module.Class": code fetched from another hub repository
        raise ModelLoadError(f"{folder}'s auto_map points at code in another repository ({elsewhere[0]}); "
                             f"only code inside the folder runs: copy that module into it")
    missing = sorted({r.split(".")[0] + ".py" for r in references if isinstance(r, str)
                      and not (folder / (r.split(".")[0] + ".py")).is_file()})
    if missing:
        raise ModelLoadError(f"{folder}'s auto_map names {', '.join(missing)}, which the folder lacks")


class TransformersModel:
    """A transformers model from a local Hugging Face folder plus our tokenizer; runners come from it."""

    def __init__(self, path: str | Path, *, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False):
        torch, transformers = import_transformers()
        from slmkit.backends.torch_native import pick_device, pick_dtype
        from slmkit.models.safetensors import read_config

        self.path = Path(path)
        raw = read_config(self.path)  # missing, oversized or broken: its own one-line error
        check_remote_code(self.path, raw, trust_remote_code)
        self.device = pick_device(device)
        torch_dtype = pick_dtype(dtype, self.device)
        started = time.perf_counter()
        transformers.utils.logging.disable_progress_bar()  # its per-tensor bar would interleave with our output
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.path), dtype=torch_dtype, trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - a folder's own code may raise anything while it loads
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"transformers cannot load {self.path}: {reason}") from exc
        self.model = model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - started
        self.config = self.model.config
        self.tokenizer = self._tokenizer(trust_remote_code)
        parameters = sum(p.numel() for p in self.model.parameters())
        model_type = str(getattr(self.config, "model_type", None) or raw.get("model_type") or "unknown")
        kind = str(torch_dtype).removeprefix("torch.")
        self.info = ModelInfo(
            path=self.path, architecture=model_type,
            description=f"{model_type} {parameters / 1e6:.0f}M {kind} on {self.device} "
                        f"(transformers {transformers.__version__})",
            parameters=parameters, size_bytes=sum(f.stat().st_size for f in self.path.glob("*.safetensors")),
            file_type=kind, context_length=int(getattr(self.config, "max_position_embeddings", None) or 4096),
            chat_template=self.tokenizer.chat_template,
            metadata={"backend": "transformers", "model_type": model_type, "remote_code": bool(raw.get("auto_map"))},
        )

    def _tokenizer(self, trust_remote_code: bool):
        eos = getattr(self.config, "eos_token_id", None)
        eos_ids = [t for t in (eos if isinstance(eos, list) else [eos]) if isinstance(t, int)]
        if (self.path / "tokenizer.json").is_file():
            from slmkit.text.hf_tokenizer import HFTokenizer

            return HFTokenizer(self.path, eos_token_ids=eos_ids)
        # No fast tokenizer (Phi-3-small's tiktoken one, other remote-code tokenizers): transformers' own.
        from slmkit.text.transformers_tokenizer import TransformersTokenizer

        return TransformersTokenizer(self.path, eos_token_ids=eos_ids, trust_remote_code=trust_remote_code)

    def create_runner(self, *, context_length: int | None = None, max_sequences: int = 16,
                      max_batch_tokens: int = 512, threads: int | None = None, **_llama_only) -> "TransformersRunner":
        context = check_runner_options(context_length=context_length, threads=threads, max_sequences=max_sequences,
                                       trained_context=self.info.context_length)
        return TransformersRunner(self, context_length=context, max_sequences=max_sequences,
                                  max_batch_tokens=max_batch_tokens, threads=threads)

    def close(self) -> None:
        self.model = None


class TransformersRunner(PerSequenceRunner):
    """The `Runner` protocol over one transformers cache per sequence (made on first use, dropped on free)."""

    def __init__(self, model: TransformersModel, *, context_length: int, max_sequences: int = 16,
                 max_batch_tokens: int = 512, threads: int | None = None):
        super().__init__(vocab_size=int(getattr(model.config, "vocab_size", None) or model.tokenizer.vocab_size),
                         context_length=context_length, max_sequences=max_sequences, max_batch_tokens=max_batch_tokens)
        self._torch, self._transformers = import_transformers()
        if threads:
            self._torch.set_num_threads(threads)
        self.model = model
        params = inspect.signature(model.model.forward).parameters
        # transformers >= 5.2x names it `cache`; remote code written for 4.x takes `past_key_values`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        rope = getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_scaling", None) or {}
        longrope = isinstance(rope, dict) and "longrope" in (rope.get("rope_type"), rope.get("type"))
        self._switch = getattr(model.config, "original_max_position_embeddings", None) if longrope else None

    def _new_state(self):
        return self._transformers.DynamicCache(config=self.model.config)

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        self._check(chunks)
        rows = []
        with self._torch.inference_mode():
            for chunk in chunks:
                ids, start = list(chunk.token_ids), chunk.start_pos
                if self._switch and start <= self._switch < start + len(ids) and start > 0:
                    # keys cached with the short factors: recompute them with the long ones
                    ids, start = self._tokens[chunk.seq_id] + ids, 0
                    self._states.pop(chunk.seq_id, None)
                logits = self._run(chunk.seq_id, ids, start, every=chunk.all_logits)
                self._hold(chunk)
                if chunk.all_logits:
                    rows.append(logits[-len(chunk.token_ids):])
                elif chunk.want_logits:
                    rows.append(logits[-1:])
        return self._stack(rows)

    def _rewind(self, seq_id: int, length: int) -> None:
        kept = self._tokens[seq_id][:length]
        try:
            self._states.get(seq_id).crop(length - len(self._tokens[seq_id]))
        except (RuntimeError, ValueError, AttributeError):  # a full sliding window keeps no past to go back to
            self.free(seq_id)
            self._replay(seq_id, kept)

    def _copy_state(self, src: int, dst: int, length: int) -> None:
        self._states[dst] = copy.deepcopy(self._states[src])
        self._tokens[dst] = list(self._tokens[src])
        self.truncate(dst, length)

    # -- internals ------------------------------------------------------------------------
    def _run(self, seq_id: int, ids: list[int], start: int, *, every: bool) -> np.ndarray:
        """One forward of ``ids`` at positions ``start ..`` on the sequence's cache; logits
        ``[rows, vocab]`` of the last token, or of every token when ``every``."""
        torch = self._torch
        cache = self._states.get(seq_id)
        if cache is None:  # stored only once the forward succeeds
            cache = self._new_state()
        device = self.model.device
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([ids], dtype=torch.long, device=device),
            "attention_mask": torch.ones((1, start + len(ids)), dtype=torch.long, device=device),
            "position_ids": torch.arange(start, start + len(ids), device=device).unsqueeze(0),
            self._cache_arg: cache, "use_cache": True,
        }
        if self._keep_arg:
            kwargs[self._keep_arg] = 0 if every else 1
        try:
            out = self.model.model(**kwargs)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise SlmkitError(f"transformers failed on sequence {seq_id}: {exc}") from exc
        returned = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        self._states[seq_id] = returned if returned is not None else cache
        return out.logits[0].float().cpu().numpy()

    def _replay(self, seq_id: int, tokens: list[int]) -> None:
        with self._torch.inference_mode():
            for start in range(0, len(tokens), self.max_batch_tokens):
                piece = tokens[start : start + self.max_batch_tokens]
                self._run(seq_id, piece, start, every=False)
                self._tokens[seq_id].extend(piece)

    def _check(self, chunks: list[Chunk]) -> None:
        if any(chunk.embeddings for chunk in chunks):
            raise InvalidParameterError("images", "the transformers engine runs text models only; "
                                                  "run a vision model with --backend torch")
        super()._check(chunks)
