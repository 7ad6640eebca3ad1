"""A Hugging Face ``tokenizer.json`` (via the ``tokenizers`` library) behind our `Tokenizer` protocol.

Pieces are bytes: byte-level BPE tokens (GPT-2, SmolLM) map their characters back through the
GPT-2 byte table; SentencePiece-style tokens (Llama 2, Phi-3) turn ``▁`` into a space and
``<0x0A>`` byte-fallback tokens into their byte. Special tokens contribute nothing to text.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from slmkit.backends.base import SpecialTokens
from slmkit.errors import ModelLoadError


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character stand-ins for the 256 byte values, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _token_name(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc})") from exc


class HFTokenizer:
    def __init__(self, folder: str | Path, *, eos_token_ids: Sequence[int] = ()):
        from tokenizers import Tokenizer as FastTokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{folder} has no tokenizer.json (the torch engine reads fast tokenizers only)")
        try:
            self._tok = FastTokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc
        self.tokenizer_json = path.read_text(encoding="utf-8")  # llguidance builds its own tokenizer from it
        spec = json.loads(self.tokenizer_json)
        config = _read_json(folder / "tokenizer_config.json")
        generation = _read_json(folder / "generation_config.json")
        self.chat_template = self._chat_template(folder, config)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._byte_level = "ByteLevel" in json.dumps(spec.get("decoder") or {})
        self._special_ids = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        self._pieces: dict[int, bytes] = {}

        bos = self.token_id(_token_name(config.get("bos_token")) or "")
        eos = self.token_id(_token_name(config.get("eos_token")) or "")
        gen_eos = generation.get("eos_token_id", [])
        ends = {t for t in [eos, *eos_token_ids, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]
                if isinstance(t, int)}
        probe = self._tok.encode("a", add_special_tokens=True).ids
        self.special = SpecialTokens(bos=bos, eos=eos, eot=None, end_of_generation=frozenset(ends),
                                     add_bos=bos is not None and bool(probe) and probe[0] == bos)

    @staticmethod
    def _chat_template(folder: Path, config: dict[str, Any]) -> str | None:
        jinja = folder / "chat_template.jinja"  # transformers >= 4.43 saves it on its own
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return template

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        # Added special tokens are always matched by `tokenizers`; nothing here asks otherwise.
        return self._tok.encode(text, add_special_tokens=add_special).ids

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        return self._tok.decode([int(t) for t in token_ids], skip_special_tokens=skip_special)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        return piece

    def _piece(self, token_id: int) -> bytes:
        name = self._tok.id_to_token(token_id)
        if name is None or token_id in self._special_ids:
            return b""
        if self._byte_level:
            table = _byte_decoder()
            if all(c in table for c in name):
                return bytes(table[c] for c in name)
            return name.encode("utf-8")
        if len(name) == 6 and name.startswith("<0x") and name.endswith(">"):
            return bytes([int(name[3:5], 16)])
        return name.replace("▁", " ").encode("utf-8")

    def token_text(self, token_id: int) -> str:
        return self._tok.id_to_token(token_id) or ""

    def token_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text) if text else None
