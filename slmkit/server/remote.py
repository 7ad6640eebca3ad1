"""Gateway: a provider model (``github:Phi-3.5-mini-instruct``) served next to local ones.

Requests for it are forwarded to the provider (on the OpenAI, Azure and Ollama chat and
completion routes) and its deltas streamed back in that API's shape; closing the stream (a client
leaving) closes the upstream response.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from slmkit.errors import InvalidParameterError
from slmkit.providers.base import Provider, ProviderRequest
from slmkit.types import Message, RequestOutput, SamplingParams


@dataclass(eq=False)
class RemoteModel:
    name: str  # the full model string, e.g. "github:Phi-3.5-mini-instruct"
    provider: Provider
    provider_model: str
    default_params: SamplingParams = field(default_factory=SamplingParams)
    loaded_at: float = field(default_factory=time.time)

    @property
    def takes_images(self) -> bool:
        """Phi's vision models carry "vision" in their name on every cloud that hosts them
        (Phi-3.5-vision-instruct, microsoft/phi-3-vision-128k-instruct); other models are taken
        to read text only, so the playground warns before sending them an image."""
        return "vision" in self.provider_model.lower()

    def check_supported(self, *, logprobs: bool, n: int) -> None:
        if logprobs:
            raise InvalidParameterError("logprobs", f"not available through the gateway for {self.name}")
        if n != 1:
            raise InvalidParameterError("n", f"the gateway forwards one completion at a time for {self.name}")

    async def chat(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        return await _started(self.provider.astream(ProviderRequest(self.provider_model, messages=messages,
                                                                    params=params)))

    async def complete(self, prompt: str, params: SamplingParams) -> AsyncIterator[RequestOutput]:
        return await _started(self.provider.astream(ProviderRequest(self.provider_model, prompt=prompt,
                                                                    params=params)))


async def _started(stream: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    """The stream with its first delta already received, so that the provider's connection,
    credential and model errors reach the caller as an error status, before a 200 goes out."""
    try:
        first = await stream.__anext__()
    except BaseException:
        await stream.aclose()
        raise

    async def rest() -> AsyncIterator[RequestOutput]:
        try:
            yield first
            async for out in stream:
                yield out
        finally:
            await stream.aclose()

    return rest()
