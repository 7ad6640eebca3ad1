"""The bounds every edge enforces alike: `SamplingParams` (the Python API and the CLI build one)
and the server's request models, whose OpenAPI schema publishes the same numbers.

Chosen to match what OpenAI documents where it documents a bound, and to keep one request
from holding unbounded memory or time where it does not.
"""

from __future__ import annotations

TEMPERATURE_MAX = 2.0  # OpenAI's range is [0, 2]
PENALTY_RANGE = 2.0  # frequency / presence penalties in [-2, 2]
LOGIT_BIAS_RANGE = 100.0  # OpenAI: each bias in [-100, 100]
MAX_LOGIT_BIAS_ENTRIES = 1024
SEED_MAX = 2**63 - 1  # numpy's generators take any non-negative int; this is JSON-safe in int64
RANDOM_SEED = -1  # llama.cpp / Ollama's "pick a random seed"
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 512  # characters per stop string
MAX_STOP_TOKEN_IDS = 64
MAX_TOP_LOGPROBS = 20
MAX_BEAMS = 128  # each beam holds two sequence slots; LLM checks it has them
MAX_CHOICES = 16  # `n` per request
MAX_PROMPTS = 64  # prompts in one /v1/completions or embeddings request
MAX_MESSAGES = 1024
MAX_TOKENS_LIMIT = 1 << 20  # a sanity cap; the real one is the context, checked per model
MAX_THREADS = 512
MIN_CONTEXT = 16
MAX_SEQUENCES = 256
CHAT_TEMPLATE_SECONDS = 1.0  # real templates render in well under a millisecond
CHAT_TEMPLATE_CHARS = 4 << 20  # the largest string or list a template may build, and its output
CHAT_TEMPLATE_INT_BITS = 4096  # `**` results; bigger integers take unbounded time and memory
SPECULATIVE_MODES = ("off", "ngram", "draft")  # per request; None takes the engine's default
DEFAULT_DRAFT_TOKENS = 8  # most tokens one sequence drafts per step (k adapts below it)
MAX_DRAFT_TOKENS = 32
