"""MLX as a `Runner`: mlx-lm's own model classes and KV caches compute logits; our tokenizer,
templates, sampling, stop strings and scheduler stay in charge.

The model is what ``mlx_lm.utils.load_model`` builds from the folder (an MLX folder from `slm convert
--to mlx`, or a plain Hugging Face folder: mlx-lm reads both), with `mlx_model_config` applied so
mlx-lm reads transformers 5's rope keys. Each sequence owns an mlx-lm prompt cache
(``make_prompt_cache``: one ``KVCache`` per layer); ``truncate`` is ``trim_prompt_cache``. Decode
tokens of several sequences run as one ``[B, 1]`` forward over mlx-lm's ``BatchKVCache``
(`mlx_batch.DecodeBatch`: the caches stay merged while the same sequences keep decoding; one per
rope regime). Prompt chunks run one sequence at a time on its own cache.

Longrope (Phi-3/3.5): mlx-lm's ``SuScaledRoPE`` rotates with the long factors at every position,
where transformers (and our torch engine) use the short factors until a sequence is longer than
``original_max_position_embeddings``. The runner keeps mlx-lm's module for the long regime and a
second ``SuScaledRoPE`` made with the short factors, sets the attention layers' ``rope`` to the one
each forward group needs, and re-prefills a sequence whose regime changes (as transformers does).
`plain_mlx_lm_greedy` in the tests measures what mlx-lm alone gives.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import numpy as np

from slmkit.backends.base import Chunk
from slmkit.backends.mlx_batch import DecodeBatch
from slmkit.backends.llamacpp import ModelInfo
from slmkit.backends.per_sequence import PerSequenceRunner
from slmkit.convert.prepared import both_rope_key_styles
from slmkit.errors import BackendUnavailableError, InvalidParameterError, ModelLoadError


def import_mlx():
    try:
        import mlx.core as mx
        import mlx_lm.utils  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError("the mlx engine needs MLX and mlx-lm: pip install 'slmkit[mlx]'") from exc
    return mx


def is_mlx_folder(path: Path) -> bool:
    """A folder mlx-lm wrote: its safetensors say ``"format": "mlx"`` in their metadata."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return False
    for file in sorted(path.glob("model*.safetensors"))[:1]:
        try:
            with file.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if size > 100_000_000:
                    return False
                header = json.loads(f.read(size))
        except (OSError, ValueError):
            return False
        return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == "mlx"
    return False


def mlx_model_config(config: dict) -> dict:
    """The config mlx-lm's models read correctly: both rope key styles; no ``rope_scaling`` for
    plain RoPE (mlx-lm's phi3 warns about a ``default`` type and ignores it anyway)."""
    config = both_rope_key_styles(config)
    if (config.get("rope_scaling") or {}).get("type") == "default":
        config["rope_scaling"] = None
    return config


def mlx_lm_models() -> Path:
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("the mlx engine needs mlx-lm: pip install 'slmkit[mlx]'")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def mlx_lm_model_types() -> frozenset[str]:
    """The ``model_type`` values the installed mlx-lm has a model for: its ``models/*.py`` and the
    aliases of its ``MODEL_REMAPPING`` (read from its files, not imported: importing mlx-lm loads
    transformers)."""
    models = mlx_lm_models()
    types = {p.stem for p in models.glob("*.py") if not p.stem.startswith("_")}
    utils = (models.parent / "utils.py").read_text(encoding="utf-8")
    remapping = re.search(r"MODEL_REMAPPING = \{(.*?)\}", utils, re.S)
    if remapping:
        types |= {alias for alias, target in re.findall(r'"([\w-]+)": "([\w-]+)"', remapping.group(1)) if target in types}
    return frozenset(types)


# What mlx-lm runs of a plain HF folder when slmkit[mlx] is not installed to ask (the model types
# our torch engine has, all of which mlx-lm has too); with it installed, mlx-lm's own list.
_KNOWN_TYPES = frozenset({"llama", "phi3", "phimoe"})


def mlx_runs_model_type(model_type: str | None) -> bool:
    """Whether mlx-lm has a model for a Hugging Face folder's ``model_type``."""
    try:
        return model_type in mlx_lm_model_types()
    except BackendUnavailableError:
        return model_type in _KNOWN_TYPES


class MLXModel:
    """mlx-lm's model for a folder plus our tokenizer; runners (prompt caches) come from it."""

    def __init__(self, path: str | Path):
        mx = import_mlx()
        import mlx_lm
        from mlx_lm.utils import load_model

        from slmkit.models.safetensors import read_config
        from slmkit.text.hf_tokenizer import HFTokenizer

        self.path = Path(path)
        raw = read_config(self.path)
        self.config = mlx_model_config(raw)
        started = time.perf_counter()
        try:
            self.model, _ = load_model(self.path, model_config=self.config)
        except (ValueError, FileNotFoundError, KeyError, TypeError, RuntimeError) as exc:  # mx.load: RuntimeError
            raise ModelLoadError(f"mlx-lm cannot load {self.path}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        eos = raw.get("eos_token_id")
        self.tokenizer = HFTokenizer(self.path, eos_token_ids=eos if isinstance(eos, list) else [eos])
        self.ropes = RopeRegimes.for_model(self.model, self.config)
        self._materialize(mx)
        quantization = raw.get("quantization") or {}
        device = str(mx.default_device())
        weights = list(self.path.glob("*.safetensors"))
        kind = f"int{quantization['bits']}" if quantization.get("bits") else _weight_dtype(self.model)
        model_type = str(raw.get("model_type", "unknown"))
        parameters = _parameters(self.model)
        self.info = ModelInfo(
            path=self.path, architecture=model_type,
            description=f"{model_type} {parameters / 1e6:.0f}M MLX {kind} on {device} (mlx-lm {mlx_lm.__version__})",
            parameters=parameters, size_bytes=sum(p.stat().st_size for p in weights), file_type=f"mlx {kind}",
            context_length=int(raw.get("max_position_embeddings") or 4096),
            chat_template=self.tokenizer.chat_template,
            metadata={"backend": "mlx", "model_type": model_type},
        )

    def _materialize(self, mx) -> None:
        """Evaluate what mlx-lm leaves lazy at load (a rope's frequencies are no parameters, so
        ``load_model`` does not evaluate them): one token through each rope regime. A lazy array is
        bound to the stream of the thread that made it, and the server and `slm compare` run the
        model on another thread than the one that loaded it ("There is no Stream(cpu, 0) in current
        thread" otherwise)."""
        from mlx_lm.models.cache import make_prompt_cache

        for long in ((False, True) if self.ropes else (True,)):
            if self.ropes:
                self.ropes.use(long)
            mx.eval(self.model(mx.array([[0]], dtype=mx.int32), cache=make_prompt_cache(self.model)))

    def create_runner(self, *, context_length: int | None = None, max_sequences: int = 16,
                      max_batch_tokens: int = 512, threads: int | None = None, **_llama_only) -> "MLXRunner":
        from slmkit.backends.base import check_runner_options

        # ``threads`` is validated but not applied: MLX takes no thread count. Its CPU backend runs
        # matmuls in the BLAS its wheel bundles, on one thread on Linux (measured: CPU time = wall time).
        context = check_runner_options(context_length=context_length, threads=threads, max_sequences=max_sequences,
                                       trained_context=self.info.context_length)
        return MLXRunner(self, context_length=context, max_sequences=max_sequences, max_batch_tokens=max_batch_tokens)

    def close(self) -> None:
        self.model = None


def _weight_dtype(model) -> str:
    from mlx.utils import tree_flatten

    names = {str(v.dtype).removeprefix("mlx.core.") for _, v in tree_flatten(model.parameters())}
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get("/".join(sorted(names)), "/".join(sorted(names)))


def _parameters(model) -> int:
    """Weights of the model, a quantized matrix counted as its float original's."""
    from mlx_lm.utils import get_total_parameters

    return int(get_total_parameters(model))


class RopeRegimes:
    """The two longrope regimes as mlx-lm ``SuScaledRoPE`` modules: mlx-lm's own (long factors) and
    one made with the short factors; `use` puts one into every attention layer."""

    def __init__(self, attentions: list, short, long, original: int):
        self._attentions, self._short, self._long, self.original = attentions, short, long, original
        self._current = long

    @classmethod
    def for_model(cls, model, config: dict) -> "RopeRegimes | None":
        from mlx_lm.models.rope_utils import SuScaledRoPE

        attentions = [getattr(layer, "self_attn", None) for layer in model.layers]
        if not attentions or not all(isinstance(getattr(a, "rope", None), SuScaledRoPE) for a in attentions):
            return None
        rope = config.get("rope_scaling") or {}
        if rope.get("short_factor") == rope.get("long_factor"):
            return None
        long = attentions[0].rope
        original = int(config.get("original_max_position_embeddings") or rope["original_max_position_embeddings"])
        # Built as mlx-lm builds the long one, the short factors in the long factors' place (it
        # rotates by ``long_factor`` only). The mscale: the config's short_mscale (PhiMoE), else
        # the one SuScaledRoPE derives from the two lengths, as for the long module.
        short = SuScaledRoPE(long.dim, base=float(config.get("rope_theta", 10000.0)),
                             max_position_embeddings=int(config["max_position_embeddings"]),
                             original_max_position_embeddings=original,
                             short_factor=rope["short_factor"], long_factor=rope["short_factor"],
                             long_mscale=rope.get("short_mscale"))
        return cls(attentions, short, long, original)

    def uses_long(self, length: int) -> bool:
        return length > self.original

    def use(self, long: bool) -> None:
        module = self._long if long else self._short
        if module is not self._current:
            for attention in self._attentions:
                attention.rope = module
            self._current = module


class MLXRunner(PerSequenceRunner):
    """The `Runner` protocol over mlx-lm prompt caches, one per sequence, batched for decoding.
    A sequence's own cache (its state) is absent while it is empty or its KV sits in a batch."""

    def __init__(self, model: MLXModel, *, context_length: int, max_sequences: int = 16, max_batch_tokens: int = 512):
        super().__init__(vocab_size=int(model.config.get("vocab_size") or model.tokenizer.vocab_size),
                         context_length=context_length, max_sequences=max_sequences, max_batch_tokens=max_batch_tokens)
        self._mx = import_mlx()
        self.model = model
        self._long = [False] * max_sequences  # rope regime each sequence's cached keys were made with
        # Decoding sequences, one batch per rope regime (a forward runs one regime).
        self._batches = {False: DecodeBatch(self._mx), True: DecodeBatch(self._mx)}

    def _new_state(self) -> list:
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(self.model.model)

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        self._check(chunks)
        for chunk in chunks:
            self._match_rope_regime(chunk.seq_id, chunk.start_pos + len(chunk.token_ids))
        rows: dict[int, np.ndarray] = {}
        decodes = [i for i, c in enumerate(chunks) if len(c.token_ids) == 1]
        for long in (False, True):
            group = [i for i in decodes if self._long[chunks[i].seq_id] == long]
            if len(group) > 1:
                rows.update(zip(group, self._decode_together([chunks[i] for i in group])))
        for i, chunk in enumerate(chunks):
            if i not in rows:
                out = self._run_alone(chunk)
                if out is not None:
                    rows[i] = out
        for chunk in chunks:
            self._hold(chunk)
        return self._stack([rows[i] for i in sorted(rows) if chunks[i].want_logits or chunks[i].all_logits])

    def _rewind(self, seq_id: int, length: int) -> None:
        from mlx_lm.models.cache import trim_prompt_cache

        trim_prompt_cache(self._own_cache(seq_id), len(self._tokens[seq_id]) - length)

    def _copy_state(self, src: int, dst: int, length: int) -> None:
        copy = self._new_state()
        for theirs, mine in zip(self._own_cache(src), copy):
            if theirs.keys is not None:
                # A slice is a new array: writes into either cache never reach the other.
                mine.state = (theirs.keys[..., :length, :], theirs.values[..., :length, :], length)
        self._mx.eval([(c.keys, c.values) for c in copy if c.keys is not None])
        self._states[dst] = copy
        self._long[dst] = self._long[src]

    def _drop_state(self, seq_id: int) -> None:
        self._leave_batch(seq_id, keep=False)
        super()._drop_state(seq_id)
        self._long[seq_id] = False

    def close(self) -> None:
        super().close()
        for batch in self._batches.values():
            batch.clear()

    # -- internals ------------------------------------------------------------------------
    def _own_cache(self, seq_id: int) -> list:
        """The sequence's own prompt cache, taken out of the batch if it is there."""
        self._leave_batch(seq_id, keep=True)
        return self._state(seq_id)

    def _leave_batch(self, seq_id: int, *, keep: bool) -> None:
        for batch in self._batches.values():
            if batch.holds(seq_id):
                cache = batch.take(seq_id, keep=keep)
                if keep:
                    self._states[seq_id] = cache

    def _decode_together(self, chunks: list[Chunk]) -> list[np.ndarray]:
        """One ``[B, 1]`` forward over the regime's batch cache; logits rows in ``chunks`` order."""
        long = self._long[chunks[0].seq_id]
        if self.model.ropes:
            self.model.ropes.use(long)

        def own_cache(seq_id: int) -> list:
            cache = self._states.pop(seq_id, None)  # its KV lives in the batch now
            return cache if cache is not None else self._new_state()

        def give_back(seq_id: int, cache: list) -> None:
            self._states[seq_id] = cache

        rows = self._batches[long].forward(self.model.model, {c.seq_id: int(c.token_ids[0]) for c in chunks},
                                           own_cache, give_back)
        return [rows[c.seq_id] for c in chunks]

    def _run_alone(self, chunk: Chunk) -> np.ndarray | None:
        mx = self._mx
        if self.model.ropes:
            self.model.ropes.use(self._long[chunk.seq_id])
        cache = self._own_cache(chunk.seq_id)
        logits = self.model.model(mx.array([list(chunk.token_ids)], dtype=mx.int32), cache=cache)[0]
        if not chunk.all_logits:
            logits = logits[-1:]
        wanted = chunk.all_logits or chunk.want_logits
        mx.eval(logits if wanted else [], [(c.keys, c.values) for c in cache])
        return np.array(logits.astype(mx.float32)) if wanted else None

    def _match_rope_regime(self, seq_id: int, end: int) -> None:
        """Recompute a sequence's cached keys when it crosses the longrope switch point (either way)."""
        ropes = self.model.ropes
        if ropes is None:
            return
        long = ropes.uses_long(end)
        if long == self._long[seq_id]:
            return
        self._long[seq_id] = long
        history = self._tokens[seq_id]
        self._leave_batch(seq_id, keep=False)
        self._states.pop(seq_id, None)
        for start in range(0, len(history), self.max_batch_tokens):
            self._run_alone(Chunk(seq_id, history[start : start + self.max_batch_tokens], start, want_logits=False))

    def _check(self, chunks: list[Chunk]) -> None:
        seen = set()
        for chunk in chunks:
            if chunk.seq_id in seen:
                raise InvalidParameterError("chunk", f"two chunks for sequence {chunk.seq_id} in one step")
            seen.add(chunk.seq_id)
            if chunk.embeddings:
                raise InvalidParameterError("chunk", "the mlx engine runs text models only (no image embeddings)")
        super()._check(chunks)
