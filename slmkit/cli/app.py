"""The `slm` typer app and what every command module shares: consoles, the model argument, loading."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

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


def load_llm(model: str, context_length: int | None = None, threads: int | None = None, system: str | None = None,
             backend: str = "auto", dtype: str = "auto", device: str = "auto", quantize: str = "none",
             speculative: str = "off"):
    """An `LLM` for a CLI command, with a spinner while it loads."""
    from slmkit.llm import LLM

    with err_console.status(f"loading {model}...", spinner="dots"):
        return LLM(model, context_length=context_length, threads=threads, system_prompt=system,
                   backend=backend, dtype=dtype, device=device, quantize=quantize,
                   # remote models have no local engine to draft in: the flag only reaches LLM
                   **({"speculative": speculative} if speculative != "off" else {}))
