"""The `slm` typer app and what every command module shares: consoles, the model argument, loading."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="slm",
    help="Run, serve and compare small language models on your CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# markup=False: model names, prompts, provider details and store text are printed as they are
# ("[github]" stays "[github]"); styling goes through Text and style= where it is wanted.
console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)



def _print_version(value: bool) -> None:
    if value:
        from slmkit import __version__

        console.print(f"slm version {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run, serve and compare small language models on your CPU."""


@app.command("help")
def help_command(
    command: Annotated[Optional[list[str]], typer.Argument(help="The command to explain.")] = None,
) -> None:
    """Help about any command (`slm help run` is `slm run --help`)."""
    app([*(command or []), "--help"], prog_name="slm")  # prints the help and exits


ModelArg = Annotated[str, typer.Argument(help="Store name (smollm2, smollm2:q8_0) or a .gguf path.")]


def load_llm(model: str, context_length: int | None = None, threads: int | None = None, system: str | None = None,
             backend: str = "auto", dtype: str = "auto", device: str = "auto", quantize: str = "none",
             speculative: str | None = None, trust_remote_code: bool = False, draft_model: str | None = None):
    """An `LLM` for a CLI command, with a spinner while it loads."""
    from slmkit.errors import InvalidParameterError
    from slmkit.llm import LLM

    try:
        with err_console.status(f"loading {model}...", spinner="dots"):
            return LLM(model, context_length=context_length, threads=threads, system_prompt=system,
                       backend=backend, dtype=dtype, device=device, quantize=quantize,
                       # remote models have no local engine to draft in: the flags only reach LLM
                       **({"speculative": speculative} if speculative not in (None, "off") else {}),
                       **({"draft_model": draft_model} if draft_model is not None else {}),
                       **({"trust_remote_code": True} if trust_remote_code else {}))
    except InvalidParameterError as exc:
        if exc.param in ("speculative", "draft_model"):  # named as the user typed them
            raise InvalidParameterError("--" + exc.param.replace("_", "-"), exc.detail) from None
        raise
