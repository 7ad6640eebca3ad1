"""`slm convert`: a HF checkpoint (a store name or a folder) → a new store model in another format.

The converter writes into a scratch folder inside the store (same file system, so the final
rename is atomic); only a finished conversion, manifest included, is renamed into place. Any
failure or interrupt removes the scratch folder, so the store never holds half a model.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from slmkit.convert.converter import HFSource
from slmkit.convert.registry import get_converter
from slmkit.errors import InvalidParameterError
from slmkit.progress import progress_bar
from slmkit.store.manifest import Manifest
from slmkit.store.store import ModelStore, looks_like_path, parse_reference


def read_source(store: ModelStore, src: str) -> tuple[HFSource, Manifest | None]:
    """The HF folder behind ``src`` and, for a store model, its manifest (template, defaults)."""
    from slmkit.models.safetensors import read_config

    resolved = store.resolve(src)
    folder = resolved.path
    if not folder.is_dir():
        raise InvalidParameterError("src", f"{src} is a GGUF file; converting needs a Hugging Face folder "
                                           "(change a GGUF's type with `slm quantize`)")
    config = read_config(folder)
    architectures = config.get("architectures") or []
    if not architectures:
        raise InvalidParameterError("src", f"{folder}/config.json names no architectures; cannot tell which "
                                           "converter applies")
    source = HFSource(folder, config, str(architectures[0]), str(config.get("model_type", "")))
    return source, (None if looks_like_path(src) else resolved.manifest)


def default_name(src: str, format_name: str, precision: str) -> str:
    base = Path(src).name if looks_like_path(src) else src.partition(":")[0]
    base = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._") or "model"
    suffix = f"-{format_name}-{precision.lower()}"
    return base[: 64 - len(suffix)] + suffix


def convert_into_store(store: ModelStore, src: str, to: str, precision: str, *, name: str | None = None) -> Manifest:
    """Convert ``src`` to format ``to`` at ``precision``; store it as ``name`` (default
    ``SRC-FORMAT-PRECISION``); returns the new manifest."""
    converter = get_converter(to, progress=store.progress)
    wanted = converter.normalize_precision(precision)
    target_name = name or default_name(src, converter.format, precision)
    model_name, tag = parse_reference(target_name)
    if tag:
        raise InvalidParameterError("name", f"{target_name!r}: give a model name without a :tag")
    if store.manifest(model_name) is not None or store.folder(model_name).exists():
        raise InvalidParameterError("name", f"a model named {model_name!r} is already in the store; pick another "
                                            f"--name or remove it with `slm rm {model_name}`")
    source, source_manifest = read_source(store, src)
    converter.check(source, wanted)

    store.models_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".convert-{model_name}-", dir=store.models_dir))
    try:
        with progress_bar(f"converting {src} to {converter.format} {wanted}", 1.0, enabled=store.progress) as update:
            result = converter.convert(source, scratch, wanted, lambda _what, done: update(done))
        manifest = Manifest(
            name=model_name, variants={result.precision: result.variant}, default_variant=result.precision,
            format=result.format, source=f"converted from {src} ({source.architecture})",
            notes={**result.notes, "engine": result.engine, "converted_from": str(source.folder)},
        )
        if source_manifest is not None:
            manifest.template, manifest.system = source_manifest.template, source_manifest.system
            manifest.parameters, manifest.license = dict(source_manifest.parameters), source_manifest.license
        manifest.save(scratch)
        final = store.folder(model_name)
        if final.exists():  # another process took the name meanwhile
            raise InvalidParameterError("name", f"a model named {model_name!r} appeared in the store meanwhile")
        scratch.chmod(0o755)  # mkdtemp made it private
        scratch.rename(final)
        return manifest
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
