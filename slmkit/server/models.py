"""The models a server holds: loaded on first use (or at start), unloaded after idling.

Each loaded chat model is a `ServedModel`: the GGUF, a runner with one KV stream per slot, and
an `AsyncEngine` whose thread owns them (and the draft model's runner, for the models given at
start when the server has ``--draft-model``). Loading happens on a worker thread, once per model even
when many requests ask for it at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from slmkit.backends.base import EmbeddingSpan
from slmkit.backends.draft import DraftModel, load_draft_model
from slmkit.backends.llamacpp import ModelInfo
from slmkit.backends.loading import load_model
from slmkit.engine.async_engine import AsyncEngine
from slmkit.engine.engine import Engine, Request
from slmkit.engine.sequence import check_fits
from slmkit.errors import InvalidParameterError, InvalidRequestError, ModelNotFoundError, RateLimitError
from slmkit.providers.registry import get_provider, parse_model_string
from slmkit.server.config import ServerConfig
from slmkit.server.remote import RemoteModel
from slmkit.store.manifest import Manifest
from slmkit.store.store import ModelStore, check_reference, looks_like_path, shown
from slmkit.structure import Tool
from slmkit.text.prompt import EncodedPrompt, PromptFormatter
from slmkit.types import Message, RequestOutput, SamplingParams

log = logging.getLogger("slmkit.server")

DEFAULT_CONTEXT = 4096


@dataclass(eq=False)
class ServedModel:
    name: str  # the store reference ("smollm2:original") or the file stem of a bare GGUF
    path: Path
    manifest: Manifest
    model: Any  # LlamaCppModel or TorchModel (info, tokenizer, create_runner, close)
    engine: AsyncEngine
    formatter: PromptFormatter
    default_params: SamplingParams
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float = 300.0
    active_requests: int = 0
    draft: DraftModel | None = None  # proposes tokens for this model (draft-model speculation)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def context_length(self) -> int:
        return self.engine.engine.runner.context_length

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def expires_at(self) -> float | None:
        """Unix time this model unloads if still idle; None when kept forever."""
        if self.keep_alive < 0:
            return None
        return time.time() + max(0.0, self.keep_alive - (time.monotonic() - self.last_used))

    def check_fits(self, prompt_tokens: int, max_tokens: int | None, *, max_tokens_param: str) -> None:
        """Prompt plus the tokens asked for must fit the context (vLLM / OpenAI's 400)."""
        check_fits(prompt_tokens, max_tokens, context_length=self.context_length, max_tokens_param=max_tokens_param)

    def admit(self, prompt_ids: list[int], params: SamplingParams, max_queue: int) -> None:
        """Refuse now, before any response starts: a full queue (429) or a bad prompt (400)."""
        snapshot = self.engine.snapshot
        slots = self.engine.engine.runner.max_sequences
        waiting = max(snapshot.waiting, self.active_requests - slots)
        if self.active_requests >= slots and waiting >= max_queue:
            raise RateLimitError(
                f"all {slots} sequence slots of {self.name} are busy and {waiting} requests wait "
                f"(limit {max_queue}); retry shortly",
                retry_after=max(1, round(waiting / slots)),
            )
        self.engine.engine.validate(Request(prompt_ids, params))
        log.debug("admitted: %d active, %d waiting", self.active_requests, waiting)

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                       max_queue: int, embeddings: Sequence[EmbeddingSpan] = ()) -> AsyncIterator[RequestOutput]:
        self.active_requests += 1
        self.last_used = time.monotonic()
        try:
            async for out in self.engine.generate(Request(prompt_ids, params, request_id, list(embeddings))):
                yield out
        finally:
            self.active_requests -= 1
            self.last_used = time.monotonic()

    async def encode_chat(self, messages: list[Message], num_crops: int | None = None,
                          tools: Sequence[Tool] = ()) -> EncodedPrompt:
        """Tokens (and image rows) of a conversation; images are decoded and run through the vision
        tower on a worker thread, so the event loop keeps serving meanwhile. `tools` go into the
        prompt (text conversations only)."""
        if any(m.images for m in messages):
            if tools:
                raise InvalidParameterError("tools", "tool calls take text conversations; send images without tools")
            return await asyncio.to_thread(self.formatter.encode_with_images, messages, num_crops=num_crops)
        return EncodedPrompt(self.formatter.encode_chat(messages, tools=tools))

    def close(self) -> None:
        self.engine.stop(drain=False, timeout=30)
        self.engine.engine.runner.close()
        self.model.close()
        if self.draft is not None:
            self.draft.close()


class ModelManager:
    def __init__(self, config: ServerConfig, store: ModelStore | None = None):
        self.config = config
        self.store = store or ModelStore(config.store_home, progress=False)
        self.loaded: dict[str, ServedModel] = {}
        self.remote: dict[str, RemoteModel] = {}  # gateway models, by model string
        self._aliases: dict[str, str] = {}  # what clients may call a model -> its loaded name
        self._loading: dict[str, asyncio.Task] = {}
        self._paths_allowed: set[str] = {m for m in config.models if looks_like_path(m)}
        self._drafted: set[str] | None = None  # names of the models the draft model drafts for

    async def get(self, reference: str, *, keep_alive: float | None = None,
                  remote_ok: bool = False) -> ServedModel | RemoteModel:
        """The loaded model for a name, loading it if needed (404 for unknown names).

        Provider model strings give a `RemoteModel` where the route can forward (``remote_ok``).
        """
        if not isinstance(reference, str) or not reference.strip():
            raise ModelNotFoundError("model: a model name is required (e.g. smollm2)")
        reference = check_reference(reference)
        parsed = parse_model_string(reference)
        if parsed is not None:
            if not remote_ok:
                raise InvalidRequestError(
                    f"{reference} is a provider model: this server forwards it on the chat and completion "
                    "routes only (OpenAI, Azure and Ollama APIs)", param="model")
            return self._remote(reference, *parsed)
        if self.config.backend.backend == "vllm":
            return await self._vllm(reference, remote_ok)
        key = self._aliases.get(reference, reference)
        served = self.loaded.get(key)
        if served is not None and not served.engine.loop.alive:
            # Its callers have had their error; the next request gets a fresh engine.
            log.error("the engine of %s died (%s); reloading it", served.name, served.engine.loop.failure)
            await asyncio.to_thread(self.unload, served.name)
            served = None
        if served is None:
            task = self._loading.get(key)
            if task is None:
                task = asyncio.create_task(self._load(reference))
                self._loading[key] = task
                task.add_done_callback(lambda _t, k=key: self._loading.pop(k, None))
            served = await asyncio.shield(task)
        if keep_alive is not None:
            served.keep_alive = keep_alive
        served.last_used = time.monotonic()
        return served

    def _remote(self, reference: str, provider_name: str, provider_model: str) -> RemoteModel:
        """A provider model: built once (no weights to load), credentials checked now."""
        remote = self.remote.get(reference)
        if remote is None:
            remote = RemoteModel(reference, get_provider(provider_name), provider_model)
            self.remote[reference] = remote
        return remote

    async def _vllm(self, reference: str, remote_ok: bool) -> RemoteModel:
        """`--backend vllm`: the model runs in vLLM's engine, reached like a gateway model."""
        if not remote_ok:
            raise InvalidRequestError(f"{reference} runs on vLLM: this server serves it on the chat and "
                                      "completion routes only", param="model")
        served = self.remote.get(reference)
        if served is None:
            from slmkit.backends.vllm import VllmEngine

            resolved = await asyncio.to_thread(self.store.resolve, reference)
            engine = await asyncio.to_thread(VllmEngine, str(resolved.path), context_length=self.config.context_length,
                                             dtype=self.config.backend.dtype)
            served = self.remote[reference] = RemoteModel(reference, engine, str(resolved.path))
        return served

    async def _load(self, reference: str) -> ServedModel:
        if looks_like_path(reference) and reference not in self._paths_allowed:
            raise ModelNotFoundError(
                f"unknown model {shown(reference)}: model files are served only when given to "
                "`slm serve --model PATH`; ask for a model by name (see GET /v1/models)"
            )
        resolved = await asyncio.to_thread(self.store.resolve, reference)
        name = _served_name(reference, resolved.name)
        if name in self.loaded:  # "smollm2" and "smollm2:original" are the same model
            self._aliases[reference] = name
            return self.loaded[name]
        log.info("loading %s from %s", name, resolved.path)
        draft = self.config.draft_model if await asyncio.to_thread(self._drafts_for, name) else None
        served = await asyncio.to_thread(self._build, name, resolved.path, resolved.manifest, draft)
        self.loaded[name] = served
        for alias in {reference, name, str(resolved.path)}:
            self._aliases[alias] = name
        log.info("loaded %s in %.1f s (context %d per sequence, %d sequences)", name,
                 served.load_seconds, served.context_length, self.config.parallel)
        return served

    def _drafts_for(self, name: str) -> bool:
        """Whether the draft model drafts for this model: one given with --model."""
        if self._drafted is None:
            drafted = set()
            for reference in self.config.models:
                if parse_model_string(reference) is None:
                    try:
                        drafted.add(_served_name(reference, self.store.resolve(reference).name))
                    except Exception:  # noqa: BLE001 - its own load reports why
                        continue
            self._drafted = drafted
        return name in self._drafted

    def _build(self, name: str, path: Path, manifest: Manifest, draft_model: str | None = None) -> ServedModel:
        started = time.perf_counter()
        cfg = self.config
        options = replace(cfg.backend, threads=cfg.threads)  # ortgenai fixes them at load
        model = load_model(path, options)
        runner = draft = None
        try:
            context = cfg.context_length or min(model.info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
            runner = model.create_runner(context_length=context, max_sequences=cfg.parallel,
                                         max_batch_tokens=cfg.max_batch_tokens, threads=cfg.threads,
                                         unified_kv=False)
            if draft_model:
                resolved = self.store.resolve(draft_model)
                draft = load_draft_model(resolved.name, resolved.path, options, target_name=name,
                                         target_tokenizer=model.tokenizer, target_runner=runner,
                                         threads=cfg.threads, unified_kv=False)
                log.info("%s drafts for %s", resolved.name, name)
        except Exception:
            if runner is not None:
                runner.close()
            model.close()
            raise
        # "draft" (the default with --draft-model) applies to the models it drafts for; others: off
        speculative = "off" if cfg.speculative == "draft" and draft is None else cfg.speculative
        engine = Engine(runner, model.tokenizer, prefix_caching=cfg.prefix_caching,
                        max_chunk_per_sequence=cfg.max_chunk_per_sequence, speculative=speculative,
                        draft_runner=None if draft is None else draft.runner)
        formatter = PromptFormatter(model.tokenizer, architecture=model.info.architecture,
                                    template=manifest.template or model.info.chat_template,
                                    system_prompt=manifest.system, model_name=name,
                                    vision=getattr(model, "vision", None), preset_messages=manifest.messages)
        return ServedModel(
            name=name, path=path, manifest=manifest, model=model,
            engine=AsyncEngine(engine, name=f"engine-{name}"), formatter=formatter,
            default_params=SamplingParams.from_dict(manifest.parameters),
            load_seconds=time.perf_counter() - started, keep_alive=cfg.keep_alive, draft=draft,
        )

    def unload(self, name: str) -> bool:
        served = self.loaded.pop(name, None)
        if served is None:
            return False
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]
        served.close()
        log.info("unloaded %s", name)
        return True

    def unload_idle(self) -> list[str]:
        """Unload models idle past their keep-alive (never one with requests in flight)."""
        now = time.monotonic()
        idle = [name for name, m in self.loaded.items()
                if m.keep_alive >= 0 and m.active_requests == 0 and now - m.last_used >= m.keep_alive]
        for name in idle:
            self.unload(name)
        return idle

    def close(self, *, drain: bool = True) -> None:
        for served in list(self.loaded.values()):
            served.engine.stop(drain=drain, timeout=60)
        for name in list(self.loaded):
            self.unload(name)


def _served_name(reference: str, resolved_name: str) -> str:
    """What the server calls a loaded model: its store reference, or a bare file's stem."""
    return Path(resolved_name).stem if looks_like_path(reference) else resolved_name
