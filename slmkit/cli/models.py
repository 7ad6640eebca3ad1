"""`slm list/show/pull/import/rm/quantize/convert`: the model store on the command line."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer
from rich.table import Table

from slmkit.cli import options as opt
from slmkit.cli.app import ModelArg, app, console, err_console
from slmkit.store.catalog import CATALOG
from slmkit.store.gguf_info import format_parameters, format_size, read_summary
from slmkit.store.store import ModelStore


@app.command("list")
def list_models(
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    remote: Annotated[bool, typer.Option("--remote", help="Cloud and remote providers instead.")] = False,
):
    """Models in the store, and the catalogue names you can pull or import."""
    if remote:
        _list_remote(json_output)
        return
    variants = ModelStore().list()
    if json_output:
        console.print_json(json.dumps([
            {"name": v.reference, "default": v.is_default, "size": v.size_bytes, "path": str(v.path),
             "modified": v.modified} for v in variants]))
        return
    table = Table("NAME", "DEFAULT", "SIZE", "MODIFIED", box=None)
    for v in variants:
        table.add_row(v.reference, "*" if v.is_default else "", format_size(v.size_bytes),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(v.modified)))
    console.print(table if variants else "No models in the store yet.")
    stored = {v.name for v in variants}
    missing = [e for e in CATALOG.values() if e.name not in stored]
    if missing:
        console.print("\nAlso known (bundled ones pull offline; others: `slm pull NAME` says how to import):")
        table = Table("NAME", "MODEL", "PARAMS", "CONTEXT", "BUNDLED", box=None)
        for e in missing:
            table.add_row(e.name, e.title, e.parameters, str(e.context_length), "yes" if e.bundled else "no")
        console.print(table)


def _list_remote(json_output: bool) -> None:
    from slmkit.providers.registry import configured_providers, get_provider, load_config

    config = load_config()
    rows = []
    for name, ok, detail in configured_providers(config):
        models = get_provider(name, config=config).known_models() if ok else []
        rows.append({"provider": name, "configured": ok, "detail": detail, "models": [f"{name}:{m}" for m in models]})
    if json_output:
        console.print_json(json.dumps(rows))
        return
    table = Table("PROVIDER", "CONFIGURED", "DETAIL", "KNOWN PHI MODELS", box=None)
    for row in rows:
        table.add_row(row["provider"], "yes" if row["configured"] else "no", row["detail"],
                      "\n".join(row["models"]) or "-")
    console.print(table)
    console.print("Use a model string with run, generate and serve, e.g. `slm run github:Phi-3.5-mini-instruct`.")


@app.command()
def show(
    model: ModelArg,
    template: Annotated[bool, typer.Option("--template", help="Print the whole chat template.")] = False,
    modelfile: Annotated[bool, typer.Option("--modelfile", help="Print a Modelfile that `slm create` "
                         "reads back into this model.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
):
    """Architecture, parameters, quantization, context, engines, template, license, size and path."""
    from slmkit.backends.loading import engine_support

    resolved = ModelStore().resolve(model)
    summary = read_summary(resolved.path)
    manifest = resolved.manifest
    if modelfile:
        from slmkit.store.modelfile import render

        sys.stdout.write(render(resolved.name, resolved.path, manifest,
                                manifest.template or summary.chat_template or "", generator="slm show --modelfile"))
        return
    engines = engine_support(resolved.path)
    facts = {
        "name": resolved.name,
        "architecture": summary.architecture,
        "parameters": format_parameters(summary.parameters),
        "quantization": summary.file_type,
        "context length": summary.context_length,
        "license": manifest.license or summary.license or "unknown",
        "size": format_size(summary.size_bytes),
        "engines": ", ".join(e.describe() for e in engines) if not json_output else
                   [{"engine": e.engine, "installed": e.installed, "extra": e.extra} for e in engines],
        "path": str(summary.path),
        "system prompt": manifest.system,
        "default parameters": manifest.parameters,
        "variants": sorted(manifest.variants) if manifest.variants else None,
        "source": manifest.source or None,
        "chat template": manifest.template or summary.chat_template,
    }
    if json_output:
        console.print_json(json.dumps(facts))
        return
    if template:
        sys.stdout.write((facts["chat template"] or "") + "\n")
        return
    chat_template = facts.pop("chat template")
    for key, value in facts.items():
        if value not in (None, {}, []):
            console.print(f"{key:<20}{value}", highlight=False, markup=False, soft_wrap=True)
    if chat_template:
        first = chat_template.strip().splitlines()[0]
        console.print(f"{'chat template':<20}{first[:60]}... (--template shows it all)",
                      highlight=False, markup=False, soft_wrap=True)


@app.command()
def pull(model: ModelArg):
    """Make a catalogue model available (bundled ones offline; smollm2 also gets its Q8_0 variant)."""
    manifest = ModelStore().pull(model)
    console.print(f"{manifest.name}: variants {', '.join(sorted(manifest.variants))}; "
                  f"default {manifest.default_variant}")
    if manifest.notes.get("q8_0_check"):
        console.print(f"q8_0 check: {manifest.notes['q8_0_check']}")


@app.command("import")
def import_model(
    path: Annotated[str, typer.Argument(help="A GGUF file, or a Hugging Face folder (config.json, "
                                            "*.safetensors, tokenizer.json) for the torch engine.")],
    name: Annotated[str, typer.Option("--name", help="Store name (optionally name:tag).")],
    system: Annotated[Optional[str], typer.Option(help="Default system prompt.")] = None,
):
    """Copy a local GGUF file or Hugging Face folder into the store under NAME."""
    manifest = ModelStore().import_file(path, name, system=system)
    console.print(f"imported {path} as {manifest.name} ({', '.join(sorted(manifest.variants))})",
                  markup=False, highlight=False)


@app.command()
def rm(model: Annotated[str, typer.Argument(help="NAME (every variant), NAME:TAG (one variant), or the "
                                            "path of a variant's file in the store.")]):
    """Remove a model or one of its variants from the store (files outside the store are never deleted)."""
    removal = ModelStore().remove(model)
    for removed in removal.removed:
        console.print(f"deleted {removed}", markup=False, highlight=False)
    if removal.new_default:
        console.print(f"{removal.new_default} is now the default variant", markup=False, highlight=False)


@app.command()
def cp(
    source: Annotated[str, typer.Argument(help="NAME (every variant) or NAME:TAG (that variant).")],
    destination: Annotated[str, typer.Argument(help="The new name (an existing one is replaced).")],
):
    """Copy a model under a new name (files are hard-linked where possible)."""
    manifest = ModelStore().copy(source, destination)
    console.print(f"copied {source} to {manifest.name} ({', '.join(sorted(manifest.variants))})",
                  markup=False, highlight=False)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Store name for the new model (optionally name:tag).")],
    file: Annotated[str, typer.Option("--file", "-f", help="The Modelfile (FROM, PARAMETER, TEMPLATE, SYSTEM, "
                                      "MESSAGE, LICENSE).")] = "Modelfile",
):
    """Create a model from an Ollama-style Modelfile (FROM a store name, a .gguf file or a HF folder)."""
    from pathlib import Path

    from slmkit.errors import InvalidParameterError
    from slmkit.store.modelfile import parse

    path = Path(file).expanduser()
    if not path.is_file():
        raise InvalidParameterError("file", f"no Modelfile at {path}; give one with -f PATH")
    modelfile = parse(path.read_text(encoding="utf-8"))
    manifest = ModelStore().create(name, modelfile, relative_to=path.parent)
    for option in modelfile.ignored:
        err_console.print(f"ignored PARAMETER {option}: slmkit has no use for it (context and threads are "
                          "set when a model loads: --context-length, --threads)", markup=False, highlight=False)
    console.print(f"created {manifest.name}:{manifest.default_variant} from {modelfile.base}",
                  markup=False, highlight=False)


@app.command()
def quantize(
    model: ModelArg,
    to: Annotated[str, typer.Option("--to", help="q8_0, q6_k, q5_k_m, q4_k_m, q4_0, ...")],
    threads: opt.Threads = None,
):
    """Requantize with llama.cpp's quantizer; stored as the variant NAME:<to>."""
    manifest = ModelStore().quantize(model, to, threads=threads)
    console.print(f"stored {manifest.name}:{to.lower()}")


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="A store name of a Hugging Face model, or a Hugging Face folder.")],
    to: Annotated[str, typer.Option("--to", help="Target format: gguf (llama.cpp), onnx (ONNX Runtime GenAI), "
                                                              "openvino (OpenVINO) or mlx (mlx-lm).")],
    precision: Annotated[str, typer.Option("--precision", help="fp32, fp16, int8 or int4; GGUF also takes llama.cpp "
                                                             "types (q4_k_m, q5_k_m, q6_k, ...).")] = "int4",
    name: Annotated[Optional[str], typer.Option("--name", help="Store name of the result "
                                                             "(default: SRC-FORMAT-PRECISION).")] = None,
):
    """Convert a Hugging Face checkpoint to GGUF, ONNX, OpenVINO or MLX; the result is a new model in the store."""
    from slmkit.store.convert import convert_into_store

    manifest = convert_into_store(ModelStore(), src, to, precision, name=name)
    console.print(f"stored {manifest.name} ({manifest.format} {manifest.default_variant}, run by "
                  f"{manifest.notes.get('engine')}): slm run {manifest.name}")
