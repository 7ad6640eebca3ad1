"""Settings of one `slm serve` process (flags, with API keys also from the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from slmkit.backends.loading import BackendOptions


# Below 64 query rows per sequence llama.cpp's CPU flash attention never takes its tiled kernel,
# whose rounding differs: every token is then computed the same way in any batch or cache state.
BATCH_INVARIANT_CHUNK = 63


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    models: list[str] = field(default_factory=list)  # loaded at start; others load on first use
    api_keys: set[str] = field(default_factory=set)  # empty: no authentication
    parallel: int = 8  # sequences decoded together per model (KV slots)
    context_length: int | None = None  # per sequence; None: the model's, capped at 4096
    threads: int | None = None
    backend: BackendOptions = field(default_factory=BackendOptions)  # engine for local models
    max_batch_tokens: int = 512
    max_chunk_per_sequence: int | None = None
    prefix_caching: bool = True
    speculative: str = "off"  # "ngram": prompt-lookup drafts; "draft": the draft model's (both verified in the batched forward)
    draft_model: str | None = None  # drafts for the models loaded at start (`models`); same tokenizer
    max_queue: int = 64  # waiting requests per model before 429
    request_timeout: float = 600.0  # seconds, whole request
    keep_alive: float = 300.0  # seconds idle before a model is unloaded (< 0: never)
    max_body_bytes: int = 8 * 1024 * 1024
    embeddings: bool = True  # serve the bundled all-minilm for /v1/embeddings and /api/embed
    playground: bool = True  # the web playground at / (off: / answers "slmkit is running", like Ollama)
    store_home: str | None = None
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers (browsers refuse)

    @staticmethod
    def keys_from_env() -> set[str]:
        """``SLMKIT_API_KEYS``: comma-separated keys."""
        return {k.strip() for k in os.environ.get("SLMKIT_API_KEYS", "").split(",") if k.strip()}
