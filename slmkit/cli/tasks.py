"""`slm translate`, `slm summarize`, `slm speak`: the tasks of `slmkit.tasks` on the command line;
and the answer reader behind `slm run --speak`."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional, TextIO

import typer

from slmkit.cli import options as opt
from slmkit.cli.app import app, err_console, load_llm
from slmkit.errors import AudioOutputError, InvalidParameterError
from slmkit.store.catalog import DEFAULT_MODEL
from slmkit.types import SamplingParams

_T = "Model"
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Store name, .gguf path or provider:model.",
                                          rich_help_panel=_T)]
TaskMaxTokens = Annotated[Optional[int], typer.Option("--max-tokens", "-n", min=1, help="Most tokens per model "
                          "call (default: sized to the input).", rich_help_panel="Sampling")]
TaskTemperature = Annotated[float, typer.Option(help="0 = greedy (the default for tasks).", rich_help_panel="Sampling")]
Voice = Annotated[str, typer.Option(help="eSpeak NG voice: a language code (en, fr, de, es, ...).")]
Rate = Annotated[int, typer.Option(min=80, max=450, help="Speaking rate in words per minute.")]


def read_input(source: str | None, *, text_allowed: bool = True) -> str:
    """TEXT itself, the contents of FILE, or standard input for ``-`` (or nothing, when piped)."""
    if source is None or source == "-":
        if source is None and sys.stdin.isatty():
            raise InvalidParameterError("input", "give " + ("TEXT, " if text_allowed else "") + "a FILE, or - to read stdin")
        return sys.stdin.read()
    path = Path(source)
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    if not text_allowed:
        raise InvalidParameterError("input", f"no such file: {source}")
    if _looks_like_a_file_name(source):
        raise InvalidParameterError("input", f"no such file: {source} (to use those words as the text "
                                    "itself, pipe them in with -)")
    return source


def _looks_like_a_file_name(text: str) -> bool:
    """One word with a path separator or a file extension: a file the user meant, not text."""
    return not any(c.isspace() for c in text) and ("/" in text or bool(_FILE_NAME.fullmatch(text)))


_FILE_NAME = re.compile(r"[\w.~-]+\.(txt|md|rst|text|html?|json|jsonl|csv|srt|vtt|log|xml|docx?|pdf)", re.IGNORECASE)


@app.command()
def translate(
    source: Annotated[Optional[str], typer.Argument(metavar="[TEXT|FILE|-]", help="What to translate (default: stdin).")] = None,
    to: Annotated[str, typer.Option("--to", help="Target language: code (fr) or name (French).")] = ...,
    from_: Annotated[Optional[str], typer.Option("--from", help="Source language (default: the model guesses).")] = None,
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: TaskMaxTokens = None,
    temperature: TaskTemperature = 0.0,
    context_length: opt.ContextLength = None,
    threads: opt.Threads = None,
):
    """Translate text; long input goes piece by piece (split at sentence ends), each printed when done."""
    from slmkit.tasks.translate import iter_translation, language_name

    language_name(to)  # an unknown language fails before the model loads
    if from_:
        language_name(from_)
    text = read_input(source)
    if not text.strip():
        raise InvalidParameterError("text", "there is nothing to translate")
    llm = load_llm(model, context_length, threads)
    pieces = iter_translation(llm, text.strip(), to=to, source=from_,
                              params=SamplingParams(temperature=temperature, max_tokens=max_tokens))
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
def summarize(
    source: Annotated[Optional[str], typer.Argument(metavar="[FILE|-]", help="What to summarize (default: stdin).")] = None,
    words: Annotated[Optional[int], typer.Option(min=1, help="At most this many words.")] = None,
    bullets: Annotated[Optional[int], typer.Option(min=1, help="This many bullet points.")] = None,
    model: ModelOption = DEFAULT_MODEL,
    max_tokens: TaskMaxTokens = None,
    temperature: TaskTemperature = 0.0,
    context_length: opt.ContextLength = None,
    threads: opt.Threads = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print how the text was split.")] = False,
):
    """Summarize a text; one longer than the context is summarized piece by piece, then combined."""
    from slmkit.progress import progress_bar
    from slmkit.tasks.summarize import summarize as run_summary

    text = read_input(source, text_allowed=False)
    llm = load_llm(model, context_length, threads)
    with progress_bar("summarizing", 1, unit="calls") as update:
        summary = run_summary(llm, text, words=words, bullets=bullets,
                              params=SamplingParams(temperature=temperature, max_tokens=max_tokens),
                              on_progress=lambda done, total: update(done, total))
    sys.stdout.write(summary.text + "\n")
    if verbose:
        err_console.print(f"{summary.chunks} piece(s); {summary.map_calls} map, {summary.collapse_calls} "
                          f"collapse and 1 final call(s)")


@app.command()
def speak(
    source: Annotated[Optional[str], typer.Argument(metavar="[TEXT|FILE|-]", help="What to say (default: stdin).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a WAV file instead of playing.")] = None,
    voice: Voice = "en",
    rate: Rate = 175,
):
    """Read text aloud with eSpeak NG (offline), or write it to a WAV file with --out."""
    from slmkit.tasks.speech import Speaker

    speaker = Speaker(voice, rate)
    text = read_input(source)
    if out is not None:
        audio = speaker.save(text, out)
        err_console.print(f"wrote {out} ({audio.duration:.1f} s)")
        return
    try:
        speaker.play(text)
    except AudioOutputError as exc:
        raise AudioOutputError(f"{exc.message}; write a WAV file instead with --out speech.wav") from None


def answer_speaker(err: TextIO, voice: str = "en") -> Callable[[str], None]:
    """For `slm run --speak`: reads each answer aloud; if audio cannot play, says so once and
    goes on as a text chat."""
    from slmkit.tasks.speech import Speaker

    speaker = Speaker(voice)
    broken: list[str] = []

    def say(text: str) -> None:
        if broken or not text.strip():
            return
        try:
            speaker.play(text)
        except AudioOutputError as exc:
            broken.append(exc.message)
            err.write(f"warning: not speaking answers: {exc.message}\n")
            err.flush()

    return say
