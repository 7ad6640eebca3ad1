"""A transformers tokenizer (``AutoTokenizer``) behind our `Tokenizer` protocol, for folders with no
``tokenizer.json``: Phi-3-small's tiktoken tokenizer and other remote-code ones (the transformers
engine only; `HFTokenizer` reads every folder that has a fast tokenizer).

Pieces are bytes: tiktoken-style tokenizers give a token's bytes from ``convert_ids_to_tokens``;
string pieces go through the tokenizer's own ``convert_tokens_to_string``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from slmkit.backends.base import SpecialTokens
from slmkit.errors import ModelLoadError
from slmkit.text.hf_tokenizer import _read_json


class TransformersTokenizer:
    def __init__(self, folder: str | Path, *, eos_token_ids: Sequence[int] = (), trust_remote_code: bool = False):
        import transformers

        folder = Path(folder)
        try:
            self._tok = transformers.AutoTokenizer.from_pretrained(
                str(folder), trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - a folder's own tokenizer code may raise anything
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"cannot load the tokenizer of {folder}: {reason}") from exc
        self.chat_template = getattr(self._tok, "chat_template", None)
        self.vocab_size = len(self._tok)
        self._special_ids = set(self._tok.all_special_ids)
        self._pieces: dict[int, bytes] = {}
        generation = _read_json(folder / "generation_config.json").get("eos_token_id", [])
        bos, eos = self._tok.bos_token_id, self._tok.eos_token_id
        ends = {t for t in [eos, *eos_token_ids, *(generation if isinstance(generation, list) else [generation])]
                if isinstance(t, int)}
        probe = self._tok.encode("a", add_special_tokens=True)
        self.special = SpecialTokens(bos=bos, eos=eos, eot=None, end_of_generation=frozenset(ends),
                                     add_bos=bos is not None and bool(probe) and probe[0] == bos)

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special))

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        return self._tok.decode([int(t) for t in token_ids], skip_special_tokens=skip_special)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        return piece

    def _piece(self, token_id: int) -> bytes:
        if token_id in self._special_ids:
            return b""
        name = self._tok.convert_ids_to_tokens(token_id)
        if isinstance(name, bytes):  # tiktoken vocabularies hold raw bytes
            return name
        if not name:
            return b""
        if len(name) == 6 and name.startswith("<0x") and name.endswith(">"):  # SentencePiece byte fallback
            return bytes([int(name[3:5], 16)])
        if "▁" in name:  # a SentencePiece word start (its string rule would drop a leading space)
            return name.replace("▁", " ").encode("utf-8")
        # The tokenizer's own piece-to-text rule; a piece that is part of a UTF-8 character comes out
        # as U+FFFD here (slow string-piece tokenizers keep no byte table to do better).
        return self._tok.convert_tokens_to_string([name]).encode("utf-8")

    def token_text(self, token_id: int) -> str:
        name = self._tok.convert_ids_to_tokens(token_id)
        return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else (name or "")

    def token_id(self, text: str) -> int | None:
        if not text:
            return None
        found = self._tok.convert_tokens_to_ids(text)
        return found if isinstance(found, int) and found != self._tok.unk_token_id else None
