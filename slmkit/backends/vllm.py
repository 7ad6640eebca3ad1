"""`--backend vllm`: vLLM's engine on CUDA nodes (extra `slmkit[vllm]`).

vLLM is an engine, not a runner: it schedules, batches and samples itself, so it sits behind our
`Engine` seam (requests in, `RequestOutput` deltas out) rather than `backends/base.Runner`. Here
the requirements are checked once, so every entry point (CLI, server, Python API) refuses it with
the same one-line reason where they are not met.
"""

from __future__ import annotations

import importlib.util

from slmkit.errors import BackendUnavailableError


def missing_requirements() -> list[str]:
    """What this machine lacks for vLLM (empty: it can run)."""
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("vllm is not installed")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA device")
    except ImportError:
        missing.append("torch is not installed")
    return missing


def require_vllm() -> None:
    missing = missing_requirements()
    if missing:
        raise BackendUnavailableError(
            f"--backend vllm needs CUDA and vllm ({', '.join(missing)}): run it on a GPU node with "
            "pip install 'slmkit[vllm]', or use --backend llamacpp / torch here")


class VllmEngine:
    """vLLM's async engine in this process, with the `providers.base.Provider` face the server's
    gateway already forwards through (`server/remote.RemoteModel`): chat and completion requests
    in, `RequestOutput` deltas out. vLLM schedules, batches and samples; we convert once each way.

    Written against vLLM's `AsyncLLMEngine.generate(prompt, SamplingParams, request_id)`; it runs
    only where CUDA and vllm are present, so this project's CPU tests check its refusal only.
    """

    name = "vllm"

    def __init__(self, path: str, *, context_length: int | None = None, dtype: str = "auto"):
        require_vllm()
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.path = path
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(
            model=path, max_model_len=context_length, dtype=dtype))
        self._tokenizer = None

    async def astream(self, request):
        import time

        from vllm import SamplingParams as VllmParams

        from slmkit.types import RequestOutput, Timings, Usage

        p = request.params
        params = VllmParams(
            n=1, max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or -1,
            min_p=p.min_p, repetition_penalty=p.repetition_penalty, frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty, seed=p.seed, stop=list(p.stop),
            stop_token_ids=list(p.stop_token_ids), ignore_eos=p.ignore_eos,
            logit_bias=dict(p.logit_bias) or None)
        prompt = request.prompt if request.prompt is not None else await self._chat_prompt(request.messages)
        started, first, text_sent, ids_sent, finished = time.perf_counter(), None, 0, 0, False
        try:
            async for out in self.engine.generate(prompt, params, request.request_id):
                choice = out.outputs[0]  # vLLM's outputs are cumulative: send what is new
                first = first or time.perf_counter()
                reason = {"stop": "stop", "length": "length", "abort": "abort"}.get(choice.finish_reason or "")
                delta = RequestOutput(text=choice.text[text_sent:], token_ids=list(choice.token_ids[ids_sent:]),
                                      finish_reason=reason, request_id=request.request_id)
                text_sent, ids_sent = len(choice.text), len(choice.token_ids)
                if reason is not None:
                    finished = True
                    now = time.perf_counter()
                    delta.usage = Usage(prompt_tokens=len(out.prompt_token_ids or []),
                                        completion_tokens=len(choice.token_ids))
                    delta.timings = Timings(prefill_seconds=first - started, decode_seconds=now - first,
                                            time_to_first_token=first - started)
                yield delta
        finally:
            if not finished:  # the client left: free the request's KV blocks in vLLM
                await self.engine.abort(request.request_id)

    async def _chat_prompt(self, messages) -> str:
        if self._tokenizer is None:
            self._tokenizer = await self.engine.get_tokenizer()
        return self._tokenizer.apply_chat_template([{"role": m.role, "content": m.text} for m in messages],
                                                   tokenize=False, add_generation_prompt=True)

    def known_models(self) -> list[str]:
        return [self.path]
