"""A GGUF's header read and checked in Python before anything else parses the file.

A model file is downloaded data: it may be truncated, corrupted or written to attack the loader.
llama.cpp rejects most broken structure itself, but it aborts the whole process (``GGML_ASSERT``)
on some plausible-looking values: a block count of 0 or above 512, more than 1024 experts, an
expert count that does not match the experts used, an unknown rope scaling type, a negative or NaN
norm epsilon. So a file is read here first, every length checked against the bytes that are really
there (nothing is allocated from a count the file merely claims), and those values are refused
with a message saying what is wrong. Numbers checked are llama.cpp 0.3.36's (llama-cpp-python).

Array values are kept only when short (per-layer hyperparameters); long ones (the vocabulary)
are walked to check their bounds and kept as their length.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmkit.errors import ModelLoadError

LLAMA_MAX_LAYERS = 512  # llama-hparams.h
LLAMA_MAX_EXPERTS = 1024
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama.cpp asserts on any other
MAX_KEY_BYTES = 65535  # the GGUF spec's limit on a key's length
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME (64) including the terminating NUL
MAX_DIMS = 4  # GGML_MAX_DIMS
KEPT_ARRAY_ITEMS = 1024

# GGUF value type -> struct format of one item (STRING = 8 and ARRAY = 9 are variable-sized).
_FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


@dataclass
class GGUFArray:
    """A metadata array: its item type, length, and the items when there are few of them."""

    item_type: int
    length: int
    values: list[Any] | None = None


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: shape[0] is the fastest-varying dimension
    ggml_type: int
    offset: int  # from the start of the file
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int
    alignment: int = 32
    types: dict[str, int] = field(default_factory=dict, repr=False)  # key -> GGUF value type

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else "unknown"

    def hparam(self, name: str, default: Any = None) -> Any:
        """``{architecture}.{name}`` (``block_count``, ``attention.head_count``, ...)."""
        return self.metadata.get(f"{self.architecture}.{name}", default)


class _Cursor:
    """Reads little-endian values from the mapped file; running past its end is a clear error."""

    def __init__(self, data, path: Path):
        self.data, self.pos, self.path, self.where = data, 0, path, "the header"

    def fail(self, why: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path} is not a usable GGUF file: {why} (in {self.where}, byte {self.pos}); "
                              "download or convert it again")

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"the file ends after {len(self.data)} bytes, {n} more were expected; it is "
                            "truncated or corrupted")

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def raw_string(self, limit: int | None = None) -> bytes:
        n = self.unpack("<Q")
        if limit is not None and n > limit:
            raise self.fail(f"a string of {n} bytes where at most {limit} are allowed")
        self.need(n)
        value = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return value

    def text(self, limit: int | None = None) -> str:
        raw = self.raw_string(limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string that is not valid UTF-8") from None

    def value(self, vtype: int) -> Any:
        if vtype in _FIXED:
            return self.unpack(_FIXED[vtype])
        if vtype == _STRING:
            return self.text()
        if vtype == _ARRAY:
            item_type, length = self.unpack("<I"), self.unpack("<Q")
            if item_type == _ARRAY:
                raise self.fail("an array of arrays, which llama.cpp cannot read")
            if item_type in _FIXED:
                size = struct.calcsize(_FIXED[item_type])
                self.need(length * size)  # checked before anything is read or kept
                if length > KEPT_ARRAY_ITEMS:
                    self.pos += length * size
                    return GGUFArray(item_type, length)
                values = list(struct.unpack_from(f"<{length}{_FIXED[item_type][1]}", self.data, self.pos))
                self.pos += length * size
                return GGUFArray(item_type, length, values)
            if item_type != _STRING:
                raise self.fail(f"an array of unknown value type {item_type}")
            self.need(length * 8)  # every string has at least its 8-byte length
            if length > KEPT_ARRAY_ITEMS:  # a vocabulary: walk the lengths only (tight loop: 50k+ items)
                pos, end, unpack = self.pos, len(self.data), _U64.unpack_from
                for _ in range(length):
                    if pos + 8 > end:
                        self.pos = end
                        self.need(8)  # fails, naming the file's size
                    pos += 8 + unpack(self.data, pos)[0]
                self.need(pos - self.pos)
                self.pos = pos
                return GGUFArray(item_type, length)
            return GGUFArray(item_type, length, [self.raw_string().decode("utf-8", "replace") for _ in range(length)])
        raise self.fail(f"unknown value type {vtype}")


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """The metadata and tensor table of a GGUF, every length and offset checked against the file.

    A missing file is a `ModelLoadError` saying so; any structural problem one naming the place."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < 24:
                raise ModelLoadError(f"{path} is not a GGUF file: it has only {size} bytes (an empty or "
                                     "interrupted download?)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(data, path, size)
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None


def _parse(data, path: Path, size: int) -> GGUFHeader:
    cur = _Cursor(data, path)
    if data[:4] != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {bytes(data[:4])!r}, not b'GGUF')")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in (2, 3):
        hint = " (a big-endian file: llama.cpp reads little-endian GGUF only)" if version in (2 << 24, 3 << 24) else ""
        raise ModelLoadError(f"{path} is GGUF version {version}{hint}; llama.cpp reads versions 2 and 3")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    room = size - cur.pos
    # The smallest record: a KV pair is 8 (key length) + 4 (type) + 1; a tensor is 8 + 4 + 8 + 4 + 8.
    if n_kv * 13 > room or n_tensors * 32 > room:
        raise ModelLoadError(f"{path} is not a usable GGUF file: its header claims {n_kv} metadata entries "
                             f"and {n_tensors} tensors, more than its {size} bytes can hold (truncated or corrupted)")
    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    for i in range(n_kv):
        cur.where = f"metadata entry {i}"
        key = cur.text(MAX_KEY_BYTES)
        cur.where = f"metadata {key!r}"
        if key in metadata:
            raise cur.fail("the key appears twice")
        vtype = cur.unpack("<I")
        metadata[key] = cur.value(vtype)
        types[key] = vtype
    alignment = metadata.get("general.alignment", 32)
    if types.get("general.alignment", 4) != 4 or not isinstance(alignment, int) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise ModelLoadError(f"{path} is not a usable GGUF file: general.alignment is {alignment!r}, "
                             "not a power of two")
    tensors = _tensor_table(cur, n_tensors)
    data_offset = cur.pos + (-cur.pos % alignment)
    for tensor in tensors:
        if tensor.offset % alignment:
            raise ModelLoadError(f"{path} is not a usable GGUF file: tensor {tensor.name!r} starts at offset "
                                 f"{tensor.offset}, not a multiple of the alignment {alignment} (corrupted)")
        tensor.offset += data_offset
    _check_data_bounds(path, tensors, data_offset, size)
    return GGUFHeader(path, version, metadata, tensors, data_offset, size, alignment, types)


def _tensor_table(cur: _Cursor, n_tensors: int) -> list[TensorInfo]:
    from gguf.constants import GGML_QUANT_SIZES  # the block and byte sizes of every ggml type

    sizes = {int(t): s for t, s in GGML_QUANT_SIZES.items()}
    tensors, names = [], set()
    for i in range(n_tensors):
        cur.where = f"tensor {i}"
        name = cur.text(MAX_TENSOR_NAME)
        cur.where = f"tensor {name!r}"
        if name in names:
            raise cur.fail("the tensor name appears twice")
        names.add(name)
        n_dims = cur.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"{n_dims} dimensions (ggml has 1 to {MAX_DIMS})")
        shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
        ggml_type, offset = cur.unpack("<I"), cur.unpack("<Q")
        if ggml_type not in sizes:
            raise cur.fail(f"unknown tensor type {ggml_type}")
        block, type_size = sizes[ggml_type]
        if shape[0] % block:
            raise cur.fail(f"shape {list(shape)}: the first dimension is not a multiple of the type's block "
                           f"size {block}")
        n_elements = math.prod(shape)
        if n_elements >= 1 << 62:
            raise cur.fail(f"shape {list(shape)} has more elements than any file can hold")
        tensors.append(TensorInfo(name, shape, ggml_type, offset, n_elements // block * type_size))
    return tensors


def _check_data_bounds(path: Path, tensors: list[TensorInfo], data_offset: int, size: int) -> None:
    end = data_offset
    for tensor in sorted(tensors, key=lambda t: t.offset):
        if tensor.offset < end:
            raise ModelLoadError(f"{path} is not a usable GGUF file: tensor {tensor.name!r} overlaps the "
                                 "one before it (corrupted)")
        end = tensor.offset + tensor.n_bytes
        if end > size:
            raise ModelLoadError(f"{path} is truncated: it has {size} bytes, its tensors need {end} "
                                 f"({tensor.name!r} runs past the end); download it again")


def check_llamacpp_limits(header: GGUFHeader) -> None:
    """Refuse the hyperparameters that make llama.cpp abort the process instead of failing the load."""
    arch = header.architecture

    def bad(key: str, why: str) -> ModelLoadError:
        return ModelLoadError(f"{header.path} has {arch}.{key} = {header.hparam(key)!r}: {why}; the file is "
                              "corrupted or was written wrong")

    def integer(key: str) -> int | None:
        value = header.hparam(key)
        if value is None or isinstance(value, GGUFArray):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(key, "not an integer")
        return value

    blocks = integer("block_count")
    if blocks is not None and not 1 <= blocks <= LLAMA_MAX_LAYERS:
        raise bad("block_count", f"llama.cpp runs 1 to {LLAMA_MAX_LAYERS} layers")
    experts, used = integer("expert_count") or 0, integer("expert_used_count") or 0
    if experts > LLAMA_MAX_EXPERTS:
        raise bad("expert_count", f"llama.cpp runs at most {LLAMA_MAX_EXPERTS} experts")
    if used > experts or (experts > 0) != (used > 0):
        raise bad("expert_used_count", f"with {experts} experts it must be 1 to {experts}" if experts
                  else "there are no experts (expert_count is missing or 0)")
    context = integer("context_length")
    if context is not None and context >= 1 << 31:
        raise bad("context_length", "more than llama.cpp can count (2**31 - 1)")
    for key, value in header.metadata.items():
        if key.startswith(f"{arch}.") and isinstance(value, float) and not math.isfinite(value):
            name = key.removeprefix(f"{arch}.")
            raise bad(name, "not a finite number")
    for key in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"):
        value = header.hparam(key)
        if isinstance(value, float) and value < 0:
            raise bad(key, "a norm epsilon must not be negative")
    for key in ("rope.freq_base", "rope.scaling.factor"):  # garbage (NaN logits) otherwise
        value = header.hparam(key)
        if isinstance(value, float) and value < (0 if key == "rope.scaling.factor" else 1e-30):
            raise bad(key, "must be positive")
    scaling = header.hparam("rope.scaling.type")
    if scaling is not None and scaling not in ROPE_SCALING_TYPES:
        raise bad("rope.scaling.type", f"llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}")


def check_gguf(path: str | Path) -> GGUFHeader:
    """`read_gguf_header` plus `check_llamacpp_limits`: what must pass before llama.cpp sees a file."""
    header = read_gguf_header(path)
    check_llamacpp_limits(header)
    return header
