"""Ollama's Modelfile (ollama/ollama ``docs/modelfile.md``, ``parser/parser.go``): read into a
typed `Modelfile`, and written back from a manifest (`slm show --modelfile`, ``/api/show``).

Also the vocabulary both the Modelfile's ``PARAMETER`` lines and the Ollama API's ``options``
use: Ollama's option names, their JSON types, and which `SamplingParams` field each one sets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmkit.errors import InvalidParameterError
from slmkit.store.manifest import Manifest
from slmkit.types import SamplingParams

# Ollama's option names by JSON type (api/types.go `Options` and `Runner`).
INT_OPTIONS = {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat", "num_ctx",
               "num_batch", "num_gpu", "main_gpu", "num_thread"}
FLOAT_OPTIONS = {"top_p", "min_p", "tfs_z", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                 "frequency_penalty", "mirostat_tau", "mirostat_eta"}
BOOL_OPTIONS = {"penalize_newline", "numa", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mmap",
                "use_mlock", "embedding_only"}

# Ollama option -> SamplingParams field, for the options slmkit honours.
SAMPLING_FIELDS = {
    "num_predict": "max_tokens", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
    "min_p": "min_p", "repeat_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "seed": "seed", "stop": "stop",
}
OPTION_OF_FIELD = {field: option for option, field in SAMPLING_FIELDS.items()}

INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE")
MESSAGE_ROLES = ("system", "user", "assistant")
# slmkit's own names are accepted beside Ollama's (PARAMETER max_tokens 64).
_NATIVE_FIELDS = {"max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                  "frequency_penalty", "presence_penalty", "seed", "stop", "stop_token_ids", "num_beams",
                  "length_penalty"}
_LIST_FIELDS = {"stop", "stop_token_ids"}
_LINE = re.compile(r"^\s*(\S+)(?:\s+(.*))?$", re.DOTALL)


@dataclass
class Modelfile:
    """What a Modelfile says: the base, and what to set over the base's manifest."""

    base: str  # FROM: a store reference, a .gguf path, or a Hugging Face folder
    parameters: dict[str, Any] = field(default_factory=dict)  # SamplingParams fields
    template: str | None = None
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    license: str | None = None
    ignored: list[str] = field(default_factory=list)  # Ollama options slmkit has no use for

    def base_path(self, relative_to: Path | None) -> Path:
        """FROM as a file or folder, relative to the Modelfile's folder like Ollama reads it."""
        path = Path(self.base).expanduser()
        return path if path.is_absolute() or relative_to is None else relative_to / path

    def apply(self, manifest: Manifest) -> None:
        """Set what this Modelfile says over `manifest` (the base's settings, copied)."""
        if self.parameters:
            manifest.parameters = {**manifest.parameters, **self.parameters}
        if self.template is not None:
            manifest.template = self.template
        if self.system is not None:
            manifest.system = self.system
        if self.messages:
            manifest.messages = list(self.messages)
        if self.license is not None:
            manifest.license = self.license


def parse(text: str) -> Modelfile:
    """Read a Modelfile; the first problem is an error naming its line."""
    lines = text.splitlines()
    base: str | None = None
    found = Modelfile(base="")
    licenses: list[str] = []
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        instruction, rest = match.group(1).upper(), (match.group(2) or "")
        where = f"Modelfile line {number}"
        if instruction not in INSTRUCTIONS:
            extra = (" (LoRA adapters are not supported by slmkit)" if instruction == "ADAPTER" else "")
            raise InvalidParameterError(where, f"unknown instruction {match.group(1)!r}{extra}; a Modelfile "
                                        f"has {', '.join(INSTRUCTIONS)}")
        if instruction in ("PARAMETER", "MESSAGE"):
            key, _, rest = rest.strip().partition(" ")
            if not key:
                raise InvalidParameterError(where, f"{instruction} needs a name and a value")
        value, i = _value(rest, lines, i, where)
        if instruction == "FROM":
            base = value.strip()
        elif instruction == "PARAMETER":
            _parameter(found, key, value.strip(), where)
        elif instruction == "TEMPLATE":
            found.template = value
        elif instruction == "SYSTEM":
            found.system = value.strip()
        elif instruction == "MESSAGE":
            role = key.lower()
            if role not in MESSAGE_ROLES:
                raise InvalidParameterError(where, f"MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}, "
                                            f"got {key!r}")
            found.messages.append({"role": role, "content": value.strip()})
        else:
            licenses.append(value.strip())
    if not base:
        raise InvalidParameterError("Modelfile", "no FROM line: say which model to build on (FROM smollm2, "
                                    "FROM ./model.gguf or FROM ./hf-folder)")
    found.base = base
    found.license = "\n\n".join(licenses) if licenses else None
    if found.parameters:
        SamplingParams.from_dict(found.parameters)  # values checked together (beams vs temperature)
    return found


def build(base: str, *, parameters: dict[str, Any] | None = None, template: str | None = None,
          system: str | None = None, messages: list[dict[str, str]] | None = None,
          license: str | list[str] | None = None) -> Modelfile:
    """A Modelfile from Ollama's ``/api/create`` fields, checked like the written form."""
    found = Modelfile(base=base, template=template, system=system)
    for name, value in (parameters or {}).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise InvalidParameterError(f"parameters.{name}", f"must be a number or a string, got {item!r}")
            _parameter(found, name, str(item), f"parameters.{name}")
    for i, message in enumerate(messages or []):
        role, content = message.get("role"), message.get("content")
        if role not in MESSAGE_ROLES or not isinstance(content, str):
            raise InvalidParameterError(f"messages[{i}]", f"needs a role ({', '.join(MESSAGE_ROLES)}) and text content")
        found.messages.append({"role": role, "content": content})
    found.license = "\n\n".join(license) if isinstance(license, list) else license
    if found.parameters:
        SamplingParams.from_dict(found.parameters)
    return found


def _value(rest: str, lines: list[str], i: int, where: str) -> tuple[str, int]:
    """An argument: ``\"\"\"...\"\"\"`` (may span lines), ``"..."``, or the rest of the line."""
    stripped = rest.strip()
    if stripped.startswith('"""'):
        body = rest.lstrip()[3:]
        while '"""' not in body:
            if i >= len(lines):
                raise InvalidParameterError(where, 'the """ opened here is never closed')
            body += "\n" + lines[i]
            i += 1
        return body[: body.index('"""')], i
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        try:  # a JSON string, as `render` writes stop strings: "\n" is a newline
            decoded = json.loads(stripped)
        except ValueError:
            decoded = stripped[1:-1]
        return (decoded if isinstance(decoded, str) else stripped[1:-1]), i
    return stripped, i


def _parameter(found: Modelfile, name: str, raw: str, where: str) -> None:
    key = name.lower()
    field_name = SAMPLING_FIELDS.get(key) or (key if key in _NATIVE_FIELDS else None)
    if field_name is None:
        if key in INT_OPTIONS | FLOAT_OPTIONS | BOOL_OPTIONS:
            found.ignored.append(key)
            return
        known = sorted(set(SAMPLING_FIELDS) | _NATIVE_FIELDS)
        raise InvalidParameterError(where, f"unknown PARAMETER {name!r}; slmkit knows {', '.join(known)}")
    try:
        if field_name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty",
                          "presence_penalty", "length_penalty"):
            value: Any = float(raw)
        elif field_name == "stop":
            value = raw
        else:
            value = int(raw)
    except ValueError:
        raise InvalidParameterError(where, f"PARAMETER {name}: {raw!r} is not a number") from None
    if field_name == "max_tokens" and value < 0:  # Ollama's -1 / -2: no limit
        value = None
    if field_name == "seed" and value < 0:
        value = None
    if field_name in _LIST_FIELDS:
        found.parameters.setdefault(field_name, []).append(value)
    else:
        found.parameters[field_name] = value


def render(name: str, path: Path, manifest: Manifest, template: str, *, generator: str) -> str:
    """A Modelfile that `slm create` (or `ollama create`) reads back into the same model."""
    lines = [
        f"# Modelfile generated by slmkit ({generator})",
        "# To build a new Modelfile based on this one, replace the FROM line with:",
        f"# FROM {name}",
        "# TEMPLATE is the model's Jinja chat template (as in Hugging Face tokenizers), not a Go template.",
        "",
        f"FROM {path}",
    ]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if manifest.system:
        lines.append(f'SYSTEM """{manifest.system}"""')
    for option, value in ollama_parameters(manifest.parameters):
        lines.append(f"PARAMETER {option} {value}")
    for message in manifest.messages:
        lines.append(f'MESSAGE {message["role"]} """{message["content"]}"""')
    if manifest.license:
        lines.append(f'LICENSE """{manifest.license}"""')
    return "\n".join(lines) + "\n"


def ollama_parameters(parameters: dict) -> list[tuple[str, str]]:
    """A manifest's SamplingParams defaults under Ollama's option names, one (name, value) per line."""
    pairs = []
    for key, value in parameters.items():
        option = OPTION_OF_FIELD.get(key, key)
        for item in value if isinstance(value, list) else [value]:
            if item is None:  # no limit / a random seed: Ollama's default, nothing to write
                continue
            text = json.dumps(item) if isinstance(item, (str, bool)) or item is None else str(item)
            pairs.append((option, text))
    return pairs
