"""`slm`: the command line. Thin: parse flags, call the Python API, render with rich."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from slmkit import cli_options as opt
from slmkit.errors import SlmkitError
from slmkit.store.catalog import CATALOG, DEFAULT_MODEL
from slmkit.store.gguf_info import format_parameters, format_size, read_gguf_summary, read_hf_summary
from slmkit.store.store import ModelStore

app = typer.Typer(
    name="slm",
    help="Run, serve and compare small language models on your CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ModelArg = Annotated[str, typer.Argument(help="Store name (smollm2, smollm2:q8_0) or a .gguf path.")]


def _load(model: str, context_length: int | None, threads: int | None, system: str | None = None,
          backend: str = "auto", dtype: str = "auto", device: str = "auto"):
    from slmkit.llm import LLM

    with err_console.status(f"loading {model}...", spinner="dots"):
        return LLM(model, context_length=context_length, threads=threads, system_prompt=system,
                   backend=backend, dtype=dtype, device=device)


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="Model to chat with.")] = DEFAULT_MODEL,
    prompt: Annotated[Optional[str], typer.Argument(help="Answer this one prompt and exit.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt (default: the model's).")] = None,
    max_tokens: opt.MaxTokens = None, temperature: opt.Temperature = None, top_k: opt.TopK = None,
    top_p: opt.TopP = None, min_p: opt.MinP = None, repetition_penalty: opt.RepetitionPenalty = None,
    frequency_penalty: opt.FrequencyPenalty = None, presence_penalty: opt.PresencePenalty = None,
    seed: opt.Seed = None, stop: opt.Stop = None, stop_token_id: opt.StopTokenIds = None,
    logit_bias: opt.LogitBias = None, num_beams: opt.NumBeams = None, length_penalty: opt.LengthPenalty = None,
    ignore_eos: opt.IgnoreEos = False, context_length: opt.ContextLength = None, threads: opt.Threads = None,
    backend: opt.Backend = "auto", dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    verbose: opt.Verbose = False,
    speak: Annotated[bool, typer.Option("--speak", help="Read each answer aloud (eSpeak NG, offline).")] = False,
):
    """Chat with a model: one PROMPT, lines piped on stdin, or an interactive REPL."""
    from slmkit.cli_chat import ChatSession, repl

    flags = opt.SamplingFlags(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                              frequency_penalty, presence_penalty, seed, stop, stop_token_id, logit_bias,
                              num_beams, length_penalty, ignore_eos)
    llm = _load(model, context_length, threads, system, backend, dtype, device)
    session = ChatSession(llm, flags.apply(llm.default_params), verbose=verbose, system=llm.system_prompt)
    llm.system_prompt = None  # the session adds its own system message (changeable with /system)
    if speak:
        from slmkit.cli_tasks import answer_speaker

        session.on_answer = answer_speaker(sys.stderr)
    if prompt is not None:
        session.ask(prompt, sys.stdout, sys.stderr)
        return
    code = repl(session, interactive=sys.stdin.isatty())
    if code:
        raise typer.Exit(code)


@app.command()
def generate(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="Text to continue (no chat template).")],
    max_tokens: opt.MaxTokens = None, temperature: opt.Temperature = None, top_k: opt.TopK = None,
    top_p: opt.TopP = None, min_p: opt.MinP = None, repetition_penalty: opt.RepetitionPenalty = None,
    frequency_penalty: opt.FrequencyPenalty = None, presence_penalty: opt.PresencePenalty = None,
    seed: opt.Seed = None, stop: opt.Stop = None, stop_token_id: opt.StopTokenIds = None,
    logit_bias: opt.LogitBias = None, num_beams: opt.NumBeams = None, length_penalty: opt.LengthPenalty = None,
    ignore_eos: opt.IgnoreEos = False, context_length: opt.ContextLength = None, threads: opt.Threads = None,
    backend: opt.Backend = "auto", dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    verbose: opt.Verbose = False,
):
    """Complete raw text (no chat template), streaming."""
    from slmkit.cli_chat import print_stats, print_stream

    flags = opt.SamplingFlags(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                              frequency_penalty, presence_penalty, seed, stop, stop_token_id, logit_bias,
                              num_beams, length_penalty, ignore_eos)
    llm = _load(model, context_length, threads, None, backend, dtype, device)
    params = flags.apply(llm.default_params)
    result = print_stream(llm.generate(prompt, params, stream=True), sys.stdout)
    if verbose:
        print_stats(llm, result, sys.stderr)


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
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
):
    """Architecture, parameters, quantization, context, template, license, size and path."""
    resolved = ModelStore().resolve(model)
    summary = read_hf_summary(resolved.path) if resolved.path.is_dir() else read_gguf_summary(resolved.path)
    manifest = resolved.manifest
    facts = {
        "name": resolved.name,
        "architecture": summary.architecture,
        "parameters": format_parameters(summary.parameters),
        "quantization": summary.file_type,
        "context length": summary.context_length,
        "license": manifest.license or summary.license or "unknown",
        "size": format_size(summary.size_bytes),
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
    console.print(f"imported {path} as {manifest.name} ({', '.join(sorted(manifest.variants))})")


@app.command()
def rm(model: ModelArg):
    """Remove a model (NAME) or one variant (NAME:TAG) from the store."""
    for removed in ModelStore().remove(model):
        console.print(f"deleted {removed}")


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
def serve(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Load at start (repeatable); "
                     "others load on first use. A .gguf path is served under its file name.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Required key (repeatable); "
                       "also SLMKIT_API_KEYS=k1,k2.")] = None,
    parallel: Annotated[int, typer.Option(min=1, max=256, help="Sequences decoded together per model.")] = 8,
    context_length: opt.ContextLength = None,
    threads: opt.Threads = None,
    backend: opt.Backend = "auto", dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    max_queue: Annotated[int, typer.Option(min=0, help="Waiting requests per model before 429.")] = 64,
    request_timeout: Annotated[float, typer.Option(min=1, help="Seconds before a request is stopped.")] = 600,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle model stays loaded (<0: forever).")] = 300,
    no_prefix_cache: Annotated[bool, typer.Option("--no-prefix-cache", help="Recompute every prompt.")] = False,
    batch_invariant: Annotated[bool, typer.Option("--batch-invariant", help="Prefill in chunks of < 64 "
                               "tokens so every answer is bit-identical whatever the batch or cache.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
):
    """Serve models over the OpenAI, Ollama and Azure AI Inference APIs."""
    from slmkit.backends.loading import BackendOptions
    from slmkit.server.config import BATCH_INVARIANT_CHUNK, ServerConfig
    from slmkit.server.run import serve as run_server

    config = ServerConfig(
        host=host, port=port, models=list(model or []),
        api_keys=set(api_key or []) | ServerConfig.keys_from_env(), parallel=parallel,
        context_length=context_length, threads=threads, max_queue=max_queue,
        backend=BackendOptions(backend, dtype, device),
        request_timeout=request_timeout, keep_alive=keep_alive, prefix_caching=not no_prefix_cache,
        max_chunk_per_sequence=BATCH_INVARIANT_CHUNK if batch_invariant else None,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        err_console.print(f"[yellow]warning:[/] serving on {host} without an API key (use --api-key)")
    run_server(config, log_level=log_level)


from slmkit import cli_tasks  # noqa: E402

cli_tasks.register(app)  # translate, summarize, speak
import slmkit.cli_tools  # noqa: E402,F401  - registers compare, bench and eval on `app`


def main() -> None:
    """Entry point: our errors become one clear line and exit 1, never a traceback.

    Usage errors (unknown flag, a value of the wrong type) are typer's own, with exit code 2.
    """
    try:
        app(prog_name="slm")
    except SlmkitError as exc:
        sys.stderr.write(f"Error: {exc.message}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
