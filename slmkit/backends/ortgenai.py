"""ONNX Runtime GenAI as a `Runner`: an ORT GenAI folder (``genai_config.json``, ``model.onnx``)
computes logits; our tokenizer, templates, sampling, stop strings and scheduler stay in charge.

One ``og.Generator`` per sequence: ``append_tokens`` runs a prompt chunk or a decode token,
``get_logits`` / ``get_output("logits")`` give the last / every position's logits, ``rewind_to``
truncates. Batching limits, from ORT GenAI 0.18's own rules (REFERENCE §8a): a Generator with
batch > 1 takes its prompts once, left-padded, and rewinds only to 0; ``og.Engine`` admits new
requests only when its running batch is done unless the model was built with paged attention
(CUDA fp16/bf16 only). So on a CPU each sequence has its own Generator and a step runs them one
after another: continuous batching works (sequences join and leave at any step), but a step
costs the sum of its sequences, not one batched matmul. `benchmarks/engines.py` measures it.
``copy_prefix`` re-runs the prefix on the target (ORT shares no KV between Generators).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from slmkit.backends.base import Chunk
from slmkit.backends.llamacpp import ModelInfo, default_threads
from slmkit.backends.per_sequence import PerSequenceRunner
from slmkit.errors import BackendUnavailableError, InvalidParameterError, ModelLoadError, SlmkitError

GENAI_CONFIG = "genai_config.json"


def import_og():
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise BackendUnavailableError("the ortgenai engine needs ONNX Runtime GenAI: pip install 'slmkit[onnx]'") from exc
    return og


def is_ortgenai_folder(path: Path) -> bool:
    return path.is_dir() and (path / GENAI_CONFIG).is_file()


def _read_genai_config(folder: Path) -> dict:
    try:
        return json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / GENAI_CONFIG} is unreadable ({exc})") from exc


class OrtGenAIModel:
    """Loaded ORT GenAI weights plus our tokenizer; runners (one Generator per sequence) come from it."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        og = import_og()
        from slmkit.text.hf_tokenizer import HFTokenizer

        self.path = Path(path)
        if not is_ortgenai_folder(self.path):
            raise ModelLoadError(f"{self.path} is not an ONNX Runtime GenAI folder (no {GENAI_CONFIG})")
        self.config = _read_genai_config(self.path)
        model_section = self.config.get("model", {})
        started = time.perf_counter()
        config = og.Config(str(self.path))
        config.clear_providers()  # the CPU; a GPU provider is a later option
        # Threads are a session option, fixed when the model loads.
        self.threads = threads or default_threads()
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": self.threads, "inter_op_num_threads": 1}}}}))
        try:
            self.og_model = og.Model(config)
        except Exception as exc:  # noqa: BLE001 - ORT raises RuntimeError with the reason
            raise ModelLoadError(f"ONNX Runtime GenAI cannot load {self.path}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        eos = model_section.get("eos_token_id", [])
        self.tokenizer = HFTokenizer(self.path, eos_token_ids=eos if isinstance(eos, list) else [eos])
        data = sum(f.stat().st_size for f in self.path.iterdir() if f.suffix in (".onnx", ".data"))
        facts = _source_facts(self.path)
        precision = str(facts.get("precision", "onnx"))
        self.info = ModelInfo(
            path=self.path, architecture=str(model_section.get("type", "unknown")),
            description=f"{model_section.get('type', '?')} ONNX {precision} on cpu (ORT GenAI {og.__version__})",
            parameters=int(facts.get("parameters", 0)), size_bytes=data, file_type=precision,
            context_length=int(model_section.get("context_length") or 4096),
            chat_template=self.tokenizer.chat_template,
            metadata={"backend": "ortgenai", "model_type": str(model_section.get("type", ""))},
        )

    def create_runner(self, *, context_length: int | None = None, max_sequences: int = 16,
                      max_batch_tokens: int = 512, threads: int | None = None, **_llama_only) -> "OrtGenAIRunner":
        if threads and threads != self.threads:
            raise InvalidParameterError("threads", f"ORT GenAI fixes its threads when the model loads "
                                                   f"({self.threads}); load it with threads={threads}")
        context = int(context_length or min(self.info.context_length, 8192))
        if context > self.info.context_length:
            raise InvalidParameterError("context_length", f"{context} exceeds the model's {self.info.context_length}")
        return OrtGenAIRunner(self, context_length=context, max_sequences=max_sequences,
                              max_batch_tokens=max_batch_tokens)

    def close(self) -> None:
        self.og_model = None


SOURCE_FACTS = "slmkit_source.json"  # written by `slm convert`: what the ONNX files do not say


def _source_facts(folder: Path) -> dict:
    path = folder / SOURCE_FACTS
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


class OrtGenAIRunner(PerSequenceRunner):
    """The `Runner` protocol over one ``og.Generator`` per sequence (made on first use, dropped on free)."""

    def __init__(self, model: OrtGenAIModel, *, context_length: int, max_sequences: int = 16,
                 max_batch_tokens: int = 512):
        super().__init__(vocab_size=int(model.config.get("model", {}).get("vocab_size") or model.tokenizer.vocab_size),
                         context_length=context_length, max_sequences=max_sequences, max_batch_tokens=max_batch_tokens)
        self._og = import_og()
        self.model = model

    def _new_state(self):
        params = self._og.GeneratorParams(self.model.og_model)
        params.set_search_options(max_length=self.context_length, do_sample=False)
        return self._og.Generator(self.model.og_model, params)

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        self._check(chunks)
        rows = []
        for chunk in chunks:
            gen = self._state(chunk.seq_id)
            try:
                gen.append_tokens(np.asarray(chunk.token_ids, dtype=np.int32))
            except Exception as exc:  # noqa: BLE001 - ORT's RuntimeError carries the reason
                raise SlmkitError(f"ONNX Runtime GenAI failed on sequence {chunk.seq_id}: {exc}") from exc
            self._hold(chunk)
            if chunk.all_logits:
                rows.append(np.asarray(gen.get_output("logits"), dtype=np.float32).reshape(-1, self.vocab_size))
            elif chunk.want_logits:
                rows.append(np.asarray(gen.get_logits(), dtype=np.float32).reshape(1, self.vocab_size))
        return self._stack(rows)

    def _rewind(self, seq_id: int, length: int) -> None:
        self._states[seq_id].rewind_to(length)

    def _copy_state(self, src: int, dst: int, length: int) -> None:
        """Re-run the prefix on the target: ORT shares no KV between Generators."""
        prefix = self._tokens[src][:length]
        for start in range(0, len(prefix), self.max_batch_tokens):
            self.forward([Chunk(dst, prefix[start : start + self.max_batch_tokens], start, want_logits=False)])
