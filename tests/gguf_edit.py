"""Write hostile variants of a real GGUF: its header re-encoded with some metadata values changed,
added or dropped, and its tensor data copied as it is (the hostile-file tests start from the bundled
SmolLM2 file so everything but the one change is a real, loadable model)."""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def encode_value(vtype: GGUFValueType, value: Any, item_type: GGUFValueType | None = None) -> bytes:
    """The bytes of one metadata value (type tag included)."""
    out = struct.pack("<I", vtype)
    if vtype == GGUFValueType.STRING:
        return out + _string(value)
    if vtype == GGUFValueType.ARRAY:
        out += struct.pack("<IQ", item_type, len(value))
        return out + b"".join(encode_value(item_type, v)[4:] for v in value)
    return out + struct.pack(_SCALARS[vtype], value)


@functools.lru_cache(maxsize=4)
def _reader(source: str) -> GGUFReader:
    return GGUFReader(source)


def rewrite(source: Path, target: Path, *, changes: dict[str, bytes | None] | None = None,
            tensor_info: dict[str, bytes] | None = None, counts: tuple[int, int] | None = None,
            copy_data: bool = True) -> Path:
    """Copy ``source`` to ``target`` with metadata ``changes`` (key -> `encode_value` bytes, or None
    to drop the key; unknown keys are appended) and raw ``tensor_info`` replacements (tensor name
    -> its whole info record). ``counts`` overrides the header's (tensor count, KV count).
    ``copy_data=False`` leaves the tensor data as zeros of the same size (a sparse file: fast, and
    enough wherever only the header is read)."""
    changes = dict(changes or {})
    reader = _reader(str(source))
    kv = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in changes:
            new = changes.pop(key)
            if new is not None:
                kv.append(_string(key) + new)
        else:
            kv.append(b"".join(part.tobytes() for part in field.parts))
    kv += [_string(key) + value for key, value in changes.items() if value is not None]
    infos = [(tensor_info or {}).get(t.name) or b"".join(p.tobytes() for p in t.field.parts) for t in reader.tensors]
    n_tensors, n_kv = counts or (len(infos), len(kv))
    header = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + b"".join(kv) + b"".join(infos)
    header += b"\0" * (-len(header) % reader.alignment)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(header)
        if not copy_data:
            dst.truncate(len(header) + Path(source).stat().st_size - reader.data_offset)
            return target
        src.seek(reader.data_offset)
        while block := src.read(1 << 24):
            dst.write(block)
    return target


def tensor_record(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    """One tensor-info record (name, dims, type, data offset) with the given values."""
    return _string(name) + struct.pack("<I", len(dims)) + np.array(dims, dtype="<u8").tobytes() + \
        struct.pack("<IQ", ggml_type, offset)


def u32(value: int) -> bytes:
    return encode_value(GGUFValueType.UINT32, value)


def f32(value: float) -> bytes:
    return encode_value(GGUFValueType.FLOAT32, value)


def string(value: str | bytes) -> bytes:
    return encode_value(GGUFValueType.STRING, value)
