"""Sentence embeddings (all-MiniLM-L6-v2 and other sentence-transformers BERT models) in numpy."""

from slmkit.embeddings.bert import BertConfig, BertEncoder
from slmkit.embeddings.embedder import (
    MINILM_NAME,
    Embedder,
    EmbeddingResult,
    locate_minilm,
)

__all__ = [
    "MINILM_NAME",
    "BertConfig",
    "BertEncoder",
    "Embedder",
    "EmbeddingResult",
    "locate_minilm",
]
