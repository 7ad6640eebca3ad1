"""Stored Responses-API answers, for ``previous_response_id`` and ``GET /v1/responses/{id}``:
in memory, the newest ``capacity`` kept (a local server has no database, and a restart forgets)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from slmkit.types import Message

DEFAULT_CAPACITY = 1024


@dataclass(frozen=True)
class StoredResponse:
    messages: tuple[Message, ...]  # the conversation up to and including this answer (no instructions)
    body: dict  # the response object as it was returned


class ConversationStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, response_id: str, messages: list[Message], body: dict) -> None:
        with self._lock:
            self._items[response_id] = StoredResponse(tuple(messages), body)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)  # the oldest goes first

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._items.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._items)
