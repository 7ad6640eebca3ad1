"""OpenVINO as a `Runner`: the stateful decoder that `slm convert --to openvino` writes
(``openvino_model.xml``) computes logits; our tokenizer, templates, sampling, stop strings,
structured output and scheduler stay in charge.

Why not OpenVINO GenAI's pipelines: ``LLMPipeline`` / ``ContinuousBatchingPipeline`` take text or
ids and return tokens, so sampling, stop strings and grammars would be theirs, not ours, and the
logits never reach us. The IR itself exposes them: inputs ``input_ids``, ``attention_mask``,
``position_ids``, ``beam_idx``, output ``logits`` ``[batch, tokens, vocab]`` (every position), and the
KV cache as variable states ``[batch, kv_heads, positions, head_dim]`` that ``query_state()``
reads and replaces. So one ``InferRequest`` per sequence (one compiled model shared): a prompt
chunk is one ``infer``; ``truncate`` cuts every state to its first positions; ``copy_prefix``
copies the source's cut states into the target (no recompute). The decode tokens of a step run
together in one batched ``infer``: their states left-padded into one batch state (masked by
``attention_mask``, each row at its own ``position_ids``), then cut back into each sequence's
request, while copying the KV costs less than reading the weights once more per sequence.
`benchmarks/engines.py` measures it against OpenVINO GenAI's ContinuousBatchingPipeline.

Precision: OpenVINO's CPU plugin runs float math in bf16 and keeps the KV cache in f16 by
default on CPUs with bf16 support (this machine); we compile with f32 for both, so an fp32
export gives the torch engine's greedy ids. int8/int4 exports are weight-compressed (NNCF).
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

MODEL_XML = "openvino_model.xml"
TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")
SOURCE_FACTS = "slmkit_source.json"  # written by `slm convert`: what the IR does not say
_INPUTS = {"input_ids", "attention_mask", "beam_idx"}
_SEQUENCE_AXIS = 2  # of a KV state: [batch, kv_heads, positions, head_dim]


def import_ov():
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("the openvino engine needs OpenVINO: pip install 'slmkit[openvino]'") from exc
    return ov


def is_openvino_folder(path: Path) -> bool:
    return path.is_dir() and (path / MODEL_XML).is_file()


def read_facts(folder: Path) -> tuple[dict, dict]:
    """config.json and what `slm convert` recorded (parameters, precision), without OpenVINO."""
    def load(name: str) -> dict:
        try:
            return json.loads((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else {}
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder / name} is unreadable ({exc})") from exc

    return load("config.json"), load(SOURCE_FACTS)


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("openvino_model.*"))


class OpenVINOModel:
    """A compiled OpenVINO decoder plus our tokenizer; runners (one InferRequest per sequence) come from it."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        ov = import_ov()
        from slmkit.text.hf_tokenizer import HFTokenizer

        self.path = Path(path)
        if not is_openvino_folder(self.path):
            raise ModelLoadError(f"{self.path} is not an OpenVINO folder (no {MODEL_XML})")
        config, facts = read_facts(self.path)
        started = time.perf_counter()
        core = ov.Core()
        try:
            model = core.read_model(str(self.path / MODEL_XML))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with the reason
            raise ModelLoadError(f"OpenVINO cannot read {self.path / MODEL_XML}: {exc}") from exc
        names = {name for port in model.inputs for name in port.get_names()}
        outputs = {name for port in model.outputs for name in port.get_names()}
        if not _INPUTS <= names or "logits" not in outputs or not model.get_sinks():
            raise ModelLoadError(f"{self.path} is not a stateful decoder export (inputs {sorted(names)}); "
                                 "convert it with `slm convert --to openvino`")
        self.has_position_ids = "position_ids" in names
        self.vocab_size = int(model.output("logits").get_partial_shape()[2].get_length())
        # Threads are a compile option, fixed when the model loads (as ORT GenAI's session options).
        self.threads = threads or default_threads()
        try:
            self.compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32",
                "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"OpenVINO cannot compile {self.path / MODEL_XML}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        self.weight_bytes = weight_bytes(self.path)
        self.tokenizer = HFTokenizer(self.path)
        precision = str(facts.get("precision", "ir"))
        model_type = str(config.get("model_type", "unknown"))
        self.info = ModelInfo(
            path=self.path, architecture=model_type,
            description=f"{model_type} OpenVINO {precision} on cpu (OpenVINO {ov.__version__})",
            parameters=int(facts.get("parameters", 0)), size_bytes=self.weight_bytes, file_type=precision,
            context_length=int(config.get("max_position_embeddings") or 4096),
            chat_template=self.tokenizer.chat_template,
            metadata={"backend": "openvino", "model_type": model_type},
        )

    def create_runner(self, *, context_length: int | None = None, max_sequences: int = 16,
                      max_batch_tokens: int = 512, threads: int | None = None, **_llama_only) -> "OpenVINORunner":
        if threads and threads != self.threads:
            raise InvalidParameterError("threads", f"OpenVINO fixes its threads when the model compiles "
                                                   f"({self.threads}); load it with threads={threads}")
        context = int(context_length or min(self.info.context_length, 8192))
        if context > self.info.context_length:
            raise InvalidParameterError("context_length", f"{context} exceeds the model's {self.info.context_length}")
        return OpenVINORunner(self, context_length=context, max_sequences=max_sequences,
                              max_batch_tokens=max_batch_tokens)

    def close(self) -> None:
        self.compiled = None


class OpenVINORunner(PerSequenceRunner):
    """The `Runner` protocol over one ``InferRequest`` per sequence (made on first use, kept for reuse)."""

    def __init__(self, model: OpenVINOModel, *, context_length: int, max_sequences: int = 16,
                 max_batch_tokens: int = 512):
        super().__init__(vocab_size=model.vocab_size, context_length=context_length, max_sequences=max_sequences,
                         max_batch_tokens=max_batch_tokens)
        self._ov = import_ov()
        self.model = model
        self._beam = np.zeros(1, dtype=np.int32)
        self._batch = None  # the InferRequest that decodes several sequences together
        self._kv_bytes_per_token: int | None = None

    def _new_state(self):
        return self.model.compiled.create_infer_request()

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        self._check(chunks)
        together = [i for i, c in enumerate(chunks) if len(c.token_ids) == 1 and not c.all_logits
                    and self._tokens[c.seq_id]]
        if len(together) < 2 or not self._worth_batching([chunks[i] for i in together]):
            together = []
        rows: dict[int, np.ndarray] = {}
        for i, chunk in enumerate(chunks):
            if i not in together:
                self._run_alone(chunk, rows, i)
        if together:
            logits = self._decode_together([chunks[i] for i in together])
            rows.update((i, logits[n : n + 1]) for n, i in enumerate(together) if chunks[i].want_logits)
        return self._stack([rows[i] for i in sorted(rows)])

    def _run_alone(self, chunk: Chunk, rows: dict[int, np.ndarray], index: int) -> None:
        request = self._state(chunk.seq_id)
        start, k = chunk.start_pos, len(chunk.token_ids)
        inputs = {"input_ids": np.asarray(chunk.token_ids, dtype=np.int64).reshape(1, k),
                  "attention_mask": np.ones((1, start + k), dtype=np.int64), "beam_idx": self._beam}
        if self.model.has_position_ids:
            inputs["position_ids"] = np.arange(start, start + k, dtype=np.int64).reshape(1, k)
        self._infer(request, inputs, f"sequence {chunk.seq_id}")
        self._hold(chunk)
        logits = request.get_tensor("logits").data
        if chunk.all_logits:
            rows[index] = np.array(logits[0], dtype=np.float32)
        elif chunk.want_logits:
            rows[index] = np.array(logits[0, -1:], dtype=np.float32)

    def _worth_batching(self, chunks: list[Chunk]) -> bool:
        """Batching reads the weights once for all rows instead of once per row, but packs every
        row's KV into one padded batch state and unpacks it again (about three copies of it)."""
        if self._kv_bytes_per_token is None:
            held = self._states[chunks[0].seq_id].query_state()
            self._kv_bytes_per_token = sum(s.state.data[0, :, 0].nbytes for s in held)
        copied = 3 * self._kv_bytes_per_token * sum(len(self._tokens[c.seq_id]) for c in chunks)
        return copied < (len(chunks) - 1) * self.model.weight_bytes

    def _decode_together(self, chunks: list[Chunk]) -> np.ndarray:
        """One decode token for each sequence in one ``infer`` of batch ``len(chunks)``: their KV
        states left-padded to the longest (masked by ``attention_mask``), each row at its own
        position; the grown states are cut back into each sequence's own request."""
        lengths = [len(self._tokens[c.seq_id]) for c in chunks]
        longest, batch_size = max(lengths), len(chunks)
        held = [{state.name: state.state for state in self._states[c.seq_id].query_state()} for c in chunks]
        if self._batch is None:
            self._batch = self.model.compiled.create_infer_request()
        for state in self._batch.query_state():
            first = held[0][state.name].data
            packed = np.zeros((batch_size, first.shape[1], longest, first.shape[3]), dtype=first.dtype)
            for row, (states, n) in enumerate(zip(held, lengths)):
                packed[row, :, longest - n :] = states[state.name].data[0]
            state.state = self._ov.Tensor(packed)
        mask = np.zeros((batch_size, longest + 1), dtype=np.int64)
        for row, n in enumerate(lengths):
            mask[row, longest - n :] = 1
        inputs = {"input_ids": np.asarray([[c.token_ids[0]] for c in chunks], dtype=np.int64),
                  "attention_mask": mask, "beam_idx": np.arange(batch_size, dtype=np.int32)}
        if self.model.has_position_ids:
            inputs["position_ids"] = np.asarray([[n] for n in lengths], dtype=np.int64)
        self._infer(self._batch, inputs, f"sequences {[c.seq_id for c in chunks]}")
        logits = np.array(self._batch.get_tensor("logits").data[:, -1], dtype=np.float32)
        grown = {state.name: state.state.data for state in self._batch.query_state()}
        for row, (chunk, n) in enumerate(zip(chunks, lengths)):
            for state in self._states[chunk.seq_id].query_state():
                state.state = self._ov.Tensor(np.ascontiguousarray(grown[state.name][row : row + 1, :, longest - n :]))
            self._hold(chunk)
        return logits

    @staticmethod
    def _infer(request, inputs: dict, what: str) -> None:
        try:
            request.infer(inputs)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's RuntimeError carries the reason
            raise SlmkitError(f"OpenVINO failed on {what}: {exc}") from exc

    def _rewind(self, seq_id: int, length: int) -> None:
        for state in self._states[seq_id].query_state():
            state.state = self._cut(state.state.data, length, seq_id)

    def _copy_state(self, src: int, dst: int, length: int) -> None:
        """The source's states, cut to the prefix, into the target's request: no re-run."""
        source = {state.name: state.state.data for state in self._states[src].query_state()}
        for state in self._state(dst).query_state():
            state.state = self._cut(source[state.name], length, src)

    def _drop_state(self, seq_id: int) -> None:
        request = self._states.get(seq_id)
        if request is not None:  # the request stays for reuse; only its KV states go
            request.reset_state()

    def close(self) -> None:
        super().close()
        self._batch = None

    def _cut(self, kv: np.ndarray, length: int, seq_id: int):
        if kv.ndim != 4 or kv.shape[_SEQUENCE_AXIS] != len(self._tokens[seq_id]):
            raise SlmkitError(f"OpenVINO KV state of shape {kv.shape} does not hold sequence {seq_id}'s "
                              f"{len(self._tokens[seq_id])} positions on axis {_SEQUENCE_AXIS}")
        return self._ov.Tensor(np.ascontiguousarray(kv[:, :, :length]))
