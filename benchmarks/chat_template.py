"""What the chat-template guards cost: the same templates rendered the way `ChatTemplate` did
before its render budget (messages coerced, Jinja's plain immutable sandbox, ``render()``) and by
`ChatTemplate` now (sandbox plus time and size limits), alternating, medians reported. Writes the `chat_template` section of
BENCHMARKS.md.

    .venv/bin/python benchmarks/chat_template.py [--reps 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, median, today, write_section  # noqa: E402

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from slmkit.backends.gguf_header import read_gguf_header
from slmkit.store.bundled import locate_smollm2
from slmkit.text.chat_template import BUILTIN_TEMPLATES, ChatTemplate, _GenerationTag, _raise_exception, _tojson
from slmkit.types import Message


def plain_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env


def render_before(template, messages: list[dict[str, str]]) -> str:
    """`ChatTemplate.render` as it was: coerce, build the context, ``render()``."""
    coerced = [Message.coerce(m) for m in messages]
    return template.render(bos_token="<s>", eos_token="</s>", tools=None, documents=None,
                           messages=[{"role": m.role, "content": m.text} for m in coerced], add_generation_prompt=True)


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: what is {i} + {i}?"})
        messages.append({"role": "assistant", "content": f"The answer is {2 * i}."})
    messages.append({"role": "user", "content": "Thanks! One more question, please."})
    return messages


def time_render(render, reps: int) -> float:
    started = time.perf_counter()
    for _ in range(reps):
        render()
    return (time.perf_counter() - started) / reps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    templates = {"SmolLM2 (GGUF metadata)": read_gguf_header(locate_smollm2()).metadata["tokenizer.chat_template"]}
    templates.update({f"built-in {name}": source for name, source in BUILTIN_TEMPLATES.items()})
    env = plain_environment()
    rows = []
    for label, source in templates.items():
        for turns in (1, 32):
            messages = conversation(turns)
            plain = env.from_string(source)
            guarded = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
            assert render_before(plain, messages) == guarded.render(messages), label
            before, after = [], []
            for _ in range(args.rounds):
                before.append(time_render(lambda: render_before(plain, messages), args.reps))
                after.append(time_render(lambda: guarded.render(messages), args.reps))
            rows.append((label, len(messages), median(before), median(after)))
            print(rows[-1], flush=True)
    lines = [
        "## Chat templates: render cost of the time and size budget (`benchmarks/chat_template.py`)", "",
        f"{today()}, {cpu_model()}. Median µs per render over {args.rounds} rounds of {args.reps}, the same "
        "output checked. Before: messages coerced, then Jinja's plain immutable sandbox. With budget: loops, "
        "`~` and `+` chains rewritten into guard filters, calls and `*`/`**`/`%` checked, output streamed "
        "through a size and deadline check.", "",
        "| template | messages | before µs | with budget µs | ratio |", "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | {n} | {b:.1f} | {a:.1f} | {a / b:.2f} |" for label, n, b, a in rows]
    print(write_section("chat_template", "\n".join(lines)))


if __name__ == "__main__":
    main()
