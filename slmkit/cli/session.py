"""`slm run`: one answer, or a chat REPL (like `ollama run`); `slm generate`: a raw completion."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TextIO

from slmkit.cli.options import parse_setting
from slmkit.errors import InvalidParameterError, SlmkitError
from slmkit.llm import LLM
from slmkit.types import Message, RequestOutput, SamplingParams
from slmkit.vision.images import LoadedImage, load_image

HELP = """Commands:
  /set NAME VALUE   change a sampling parameter (/set temperature 0.2, /set max_tokens 64)
  /set              show the current parameters
  /system TEXT      set the system prompt (and clear the conversation)
  /image PATH       add an image to your next message (vision models)
  /clear            forget the conversation
  /bye              leave (Ctrl-D works too)
  /?                this help
Use \"\"\" to begin and end a multi-line message."""


def print_stream(deltas: Iterator[RequestOutput], out: TextIO) -> RequestOutput:
    """Write deltas as they come; return the last one (finish reason, usage, timings)."""
    last = None
    pieces = []
    try:
        for delta in deltas:
            if delta.text:
                out.write(delta.text)
                out.flush()
                pieces.append(delta.text)
            last = delta
    finally:
        close = getattr(deltas, "close", None)
        if close:
            close()  # on Ctrl-C too: frees the sequence's KV cells
    out.write("\n")
    out.flush()
    last.text = "".join(pieces)
    return last


def print_stats(llm: LLM, result: RequestOutput, err: TextIO) -> None:
    usage, timings = result.usage, result.timings

    def rate(n: int, seconds: float) -> str:
        return f"{n / seconds:.1f} tokens/s" if seconds > 0 else "n/a"

    decoded = max(usage.completion_tokens - 1, 0)  # the first token is counted in prefill time
    err.write(
        f"load time:           {llm.load_seconds:.3f} s\n"
        f"prompt:              {usage.prompt_tokens} tokens in {timings.prefill_seconds:.3f} s "
        f"({rate(usage.prompt_tokens, timings.prefill_seconds)})\n"
        f"decode:              {usage.completion_tokens} tokens in {timings.decode_seconds:.3f} s "
        f"({rate(decoded, timings.decode_seconds)})\n"
        f"time to first token: {timings.time_to_first_token * 1000:.1f} ms\n"
        f"finish reason:       {result.finish_reason}\n"
    )
    if timings.drafted_tokens:
        err.write(f"speculation:         {timings.accepted_tokens} of {timings.drafted_tokens} drafted tokens "
                  f"accepted ({timings.accepted_tokens / timings.drafted_tokens:.0%})\n")
    if timings.draft_seconds:
        err.write(f"draft model:         {timings.draft_seconds:.3f} s of the decode time\n")
    err.flush()


@dataclass
class ChatSession:
    """The REPL's state: conversation, system prompt, sampling parameters."""

    llm: LLM
    params: SamplingParams
    verbose: bool = False
    system: str | None = None
    history: list[Message] = field(default_factory=list)
    on_answer: Callable[[str], None] | None = None  # e.g. read the answer aloud (slm run --speak)
    num_crops: int | None = None
    images: list[LoadedImage] = field(default_factory=list)  # every image of the conversation
    pending: list[LoadedImage] = field(default_factory=list)  # images for the next message

    def attach(self, images: list[LoadedImage]) -> None:
        """Images that go with the next message (``--image``, ``--video``, ``/image``)."""
        self.pending += images

    def messages(self, user_text: str) -> list[Message]:
        system = [Message("system", self.system)] if self.system else []
        return system + self.history + [Message("user", user_text)]

    def ask(self, user_text: str, out: TextIO, err: TextIO) -> None:
        # Each message's images are tagged in its text, numbered across the conversation, so later
        # turns still see them.
        first = len(self.images) + 1
        tags = "".join(f"<|image_{n}|>\n" for n in range(first, first + len(self.pending)))
        user_text = tags + user_text
        images = self.images + self.pending
        try:
            deltas = self.llm.chat(self.messages(user_text), self.params, stream=True, images=images,
                                   num_crops=self.num_crops)
        finally:  # a refused image is not offered again with every later message
            self.pending = []
        self.images = images
        result = print_stream(deltas, out)
        self.history += [Message("user", user_text), Message("assistant", result.text)]
        if self.on_answer:
            self.on_answer(result.text)
        if self.verbose:
            print_stats(self.llm, result, err)

    def command(self, line: str, out: TextIO) -> bool:
        """Handle a /command; False means leave."""
        name, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name == "/clear":
            self.forget()
            out.write("Cleared the conversation.\n")
        elif name == "/image":
            if not rest:
                raise InvalidParameterError("/image", "give the image's path: /image photo.png")
            self.attach([load_image(rest, rest)])
            out.write(f"Added {rest}: it goes with your next message.\n")
        elif name == "/system":
            self.system = rest or None
            self.forget()
            out.write("Set the system prompt.\n" if rest else "Cleared the system prompt.\n")
        elif name == "/set" and not rest:
            for key, value in self.params.to_dict().items():
                out.write(f"  {key} = {value!r}\n")
        elif name == "/set":
            key, _, value = rest.partition(" ")
            self.params = parse_setting(self.params, key, value.strip())
            out.write(f"Set {key} to {value.strip()}.\n")
        elif name in ("/?", "/help"):
            out.write(HELP + "\n")
        else:
            out.write(f"Unknown command {name!r}. Type /? for help.\n")
        return True

    def forget(self) -> None:
        self.history.clear()
        self.images, self.pending = [], []


def _read_lines(interactive: bool) -> Iterator[str]:
    """User input: readline with history in a terminal, plain lines from a pipe."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    try:
        import readline

        history = Path.home() / ".slmkit_history"
        try:
            readline.read_history_file(history)
        except OSError:
            pass
    except ImportError:
        readline = None
    interrupted = False  # Ctrl-C just before: a second one in a row leaves
    try:
        while True:
            try:
                line = input(">>> ")
                if line.strip().startswith('"""'):
                    parts = [line.strip()[3:]]
                    while not parts[-1].rstrip().endswith('"""'):
                        parts.append(input("... "))
                    line = "\n".join(parts).rstrip()[:-3]
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                # Ollama's habit: Ctrl-C at the prompt drops the line, it does not end the chat.
                if interrupted:
                    print()
                    return
                interrupted = True
                print("\nUse /bye or Ctrl-D to leave (or Ctrl-C again).")
                continue
            interrupted = False
            yield line
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass


def repl(session: ChatSession, *, interactive: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if interactive:
        err.write(f"Chatting with {session.llm.name}. Type /? for help, /bye to leave.\n")
    for line in _read_lines(interactive):
        if not line.strip():
            continue
        try:
            if line.lstrip().startswith("/"):
                if not session.command(line, out):
                    break
                continue
            session.ask(line, out, err)
        except KeyboardInterrupt:
            out.write("\n")
        except SlmkitError as exc:
            # A bad setting or a too-long conversation must not end the session.
            err.write(f"Error: {exc.message}\n")
            if not interactive:
                return 1
    return 0
