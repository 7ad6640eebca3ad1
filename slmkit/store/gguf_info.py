"""What a GGUF file says about itself, read from its header without loading the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmkit.backends.gguf_header import check_gguf

# general.file_type values (llama.cpp's enum llama_ftype) for the names people use.
FILE_TYPE_NAMES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k",
    11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s",
    17: "q5_k_m", 18: "q6_k", 30: "iq4_xs", 32: "bf16",
}


@dataclass
class GGUFSummary:
    path: Path
    architecture: str
    name: str
    parameters: int
    file_type: str
    context_length: int | None
    chat_template: str | None
    license: str | None
    size_bytes: int


def read_gguf_summary(path: str | Path) -> GGUFSummary:
    """Header facts of a GGUF; a file that is not one (or is broken) is a `ModelLoadError` saying so."""
    header = check_gguf(path)
    meta = header.metadata

    def text(key: str) -> str | None:
        value = meta.get(key)
        return value if isinstance(value, str) else None

    file_type = meta.get("general.file_type")
    context = header.hparam("context_length")
    return GGUFSummary(
        path=header.path,
        architecture=header.architecture,
        name=text("general.name") or header.path.stem,
        parameters=sum(t.n_elements for t in header.tensors),
        file_type=FILE_TYPE_NAMES.get(file_type, str(file_type)) if isinstance(file_type, int) else "unknown",
        context_length=context if isinstance(context, int) else None,
        chat_template=text("tokenizer.chat_template"),
        license=text("general.license"),
        size_bytes=header.file_size,
    )


def format_parameters(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}".replace(".0" + unit, unit)
    return str(count)


def format_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def read_hf_summary(folder: str | Path) -> GGUFSummary:
    """The same facts for a Hugging Face folder, from config.json and the safetensors headers."""
    import json

    from slmkit.models.safetensors import read_config, tensor_sizes, weight_files
    from slmkit.text.hf_tokenizer import HFTokenizer

    folder = Path(folder)
    config = read_config(folder)
    files = weight_files(folder)
    sizes = tensor_sizes(files)
    parameters = sum(n for n, _ in sizes.values())
    dtypes = {dtype for _, dtype in sizes.values()}
    try:
        template = HFTokenizer(folder).chat_template
    except Exception:  # noqa: BLE001 - show what we can even if the tokenizer is broken
        template = None
    card = folder / "README.md"
    license_ = None
    if card.is_file():
        for line in card.read_text(errors="replace").splitlines()[:20]:
            if line.startswith("license:"):
                license_ = line.split(":", 1)[1].strip()
    return GGUFSummary(
        path=folder, architecture=config.get("model_type", "unknown"),
        name=json.dumps(config.get("architectures", [])), parameters=parameters,
        file_type="/".join(sorted(dtypes)) or "unknown",
        context_length=config.get("max_position_embeddings"), chat_template=template, license=license_,
        size_bytes=sum(p.stat().st_size for p in files),
    )


def read_onnx_summary(folder: str | Path) -> GGUFSummary:
    """The same facts for an ONNX Runtime GenAI folder, from genai_config.json and what `slm convert`
    recorded beside it (ORT GenAI itself is not imported)."""
    import json

    from slmkit.backends.ortgenai import GENAI_CONFIG, SOURCE_FACTS
    from slmkit.text.hf_tokenizer import HFTokenizer

    folder = Path(folder)
    try:
        model = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8")).get("model", {})
        facts = json.loads((folder / SOURCE_FACTS).read_text()) if (folder / SOURCE_FACTS).is_file() else {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / GENAI_CONFIG} is unreadable ({exc})") from exc
    try:
        template = HFTokenizer(folder).chat_template
    except Exception:  # noqa: BLE001 - show what we can even if the tokenizer is broken
        template = None
    files = [p for p in folder.iterdir() if p.suffix in (".onnx", ".data")]
    return GGUFSummary(
        path=folder, architecture=str(model.get("type", "unknown")), name=str(facts.get("architecture", "")),
        parameters=int(facts.get("parameters", 0)), file_type=f"onnx {facts.get('precision', '?')}",
        context_length=model.get("context_length"), chat_template=template, license=None,
        size_bytes=sum(p.stat().st_size for p in files),
    )


def read_openvino_summary(folder: str | Path) -> GGUFSummary:
    """The same facts for an OpenVINO folder, from config.json and what `slm convert` recorded."""
    from slmkit.backends.openvino import read_facts, weight_bytes
    from slmkit.text.hf_tokenizer import HFTokenizer

    folder = Path(folder)
    config, facts = read_facts(folder)
    try:
        template = HFTokenizer(folder).chat_template
    except Exception:  # noqa: BLE001 - show what we can even if the tokenizer is broken
        template = None
    return GGUFSummary(
        path=folder, architecture=str(config.get("model_type", "unknown")), name=str(facts.get("architecture", "")),
        parameters=int(facts.get("parameters", 0)), file_type=f"openvino {facts.get('precision', '?')}",
        context_length=config.get("max_position_embeddings"), chat_template=template, license=None,
        size_bytes=weight_bytes(folder),
    )


def read_summary(path: str | Path) -> GGUFSummary:
    """Header facts of any stored model: GGUF file, ONNX Runtime GenAI, OpenVINO, MLX or HF folder."""
    from slmkit.backends.mlx import is_mlx_folder

    path = Path(path)
    if path.is_dir():
        if (path / "genai_config.json").is_file():
            return read_onnx_summary(path)
        if (path / "openvino_model.xml").is_file():
            return read_openvino_summary(path)
        return read_mlx_summary(path) if is_mlx_folder(path) else read_hf_summary(path)
    return read_gguf_summary(path)


def read_mlx_summary(folder: Path) -> GGUFSummary:
    """A folder mlx-lm wrote: a HF folder's facts, with mlx-lm's own parameter count (its index
    metadata counts a packed 4-bit matrix as its float original) and the precision it was written in."""
    import dataclasses
    import json

    from slmkit.models.safetensors import read_config

    summary = read_hf_summary(folder)
    bits = (read_config(folder).get("quantization") or {}).get("bits")
    index = folder / "model.safetensors.index.json"
    try:
        parameters = int(json.loads(index.read_text())["metadata"]["total_parameters"])
    except (OSError, ValueError, KeyError, TypeError):
        parameters = summary.parameters
    names = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
    kind = f"int{bits}" if bits else "/".join(names.get(t.lower(), t) for t in summary.file_type.split("/"))
    return dataclasses.replace(summary, parameters=parameters, file_type=f"mlx {kind}")
