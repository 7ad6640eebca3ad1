"""HF folder → OpenVINO IR folder: optimum-intel's exporter (``optimum-cli export openvino``) with
openvino-tokenizers, run in its own venv (`tool_env`): optimum-intel 2.2 needs ``transformers<5.6``.

The export is the stateful decoder (``--task text-generation-with-past``): ``openvino_model.xml``
takes ``input_ids``, ``attention_mask``, ``position_ids`` and ``beam_idx`` and keeps the KV cache
in its own state, which is what `backends/openvino.py` runs. ``int8`` / ``int4`` are NNCF's
weight-only compression (``--weight-format``), activations stay in float.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from slmkit.backends.openvino import MODEL_XML, SOURCE_FACTS, TOKENIZER_FILES
from slmkit.convert.onnx import parameter_count
from slmkit.convert.prepared import linked_copy, released_architecture, stored_dtype
from slmkit.convert.process import run_converter
from slmkit.convert.converter import ConvertedModel, HFSource, ProgressFn, unsupported_architecture
from slmkit.convert.tool_env import ToolEnv, host_torch_requirement
from slmkit.errors import InvalidParameterError, ModelLoadError

# The exporter's environment, every pin in one place. optimum-intel goes in without its declared
# dependencies: it lists torchvision, whose PyPI wheel is built for CUDA torch and breaks the
# import of transformers next to a CPU torch (``operator torchvision::nms does not exist``); the
# text exporter never uses it. Its other dependencies are listed here instead.
OPENVINO_VERSION = "2026.4.1"
EXPORTER = ToolEnv(
    "optimum-intel-2.2.0",
    requirements=(
        "optimum==2.3.0", "transformers==5.5.4", "huggingface-hub==1.21.0", "nncf==3.4.0",
        f"openvino=={OPENVINO_VERSION}", f"openvino-tokenizers=={OPENVINO_VERSION}.0", "sentencepiece==0.2.3",
        "requests==2.34.2", "setuptools", host_torch_requirement("torch==2.13.0"),
    ),
    no_deps=("optimum-intel==2.2.0",),
)

TOKENIZER_SOURCE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                          "chat_template.jinja", "generation_config.json")
_PRECISIONS = ("fp32", "fp16", "int8", "int4")
# Decoder-only families optimum-intel exports as a stateful model with the four inputs above and
# a [batch, heads, positions, head_dim] KV state (what the runner trims and copies).
ARCHITECTURES = frozenset({
    "Phi3ForCausalLM", "PhiForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
    "Qwen3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "StableLmForCausalLM", "GraniteForCausalLM",
})
_REFUSED = {
    "Phi3VForCausalLM": "optimum-intel exports Phi-3-vision only with transformers<=4.53.3 and from the "
                        "model's hub code; run it on torch or convert it to GGUF",
    "PhiMoEForCausalLM": "this OpenVINO path is not checked for PhiMoE; convert it to GGUF instead (--to gguf)",
}
# What the exporter's log says as it goes: (pattern, what, fraction done).
_STAGES = [
    (re.compile(r"Loading weights"), "loading the checkpoint", 0.15),
    (re.compile(r"TracerWarning|Export model to OpenVINO"), "tracing the model", 0.4),
    (re.compile(r"Applying .*[Cc]ompression|Statistics of the bitwidth"), "compressing weights", 0.7),
    (re.compile(r"tokenizer", re.IGNORECASE), "converting the tokenizer", 0.9),
]


class OpenVINOConverter:
    format = "openvino"
    engine = "openvino"
    architectures = ARCHITECTURES

    def __init__(self, *, progress: bool = True):
        self._progress = progress

    def normalize_precision(self, precision: str) -> str:
        name = precision.lower()
        if name not in _PRECISIONS:
            raise InvalidParameterError("precision", f"OpenVINO has no precision {precision!r}; use "
                                                     f"{', '.join(_PRECISIONS)}")
        return name

    def check(self, source: HFSource, precision: str) -> None:
        architecture = released_architecture(source.architecture)
        if architecture in _REFUSED:
            raise InvalidParameterError("src", f"{source.folder.name} ({source.architecture}): {_REFUSED[architecture]}")
        if architecture not in ARCHITECTURES:
            raise unsupported_architecture(source, "OpenVINO (optimum-intel)", ARCHITECTURES)
        # The exporter's venv is made here, before the conversion's progress bar starts: its
        # install has a bar of its own, and one terminal shows one live bar at a time.
        EXPORTER.ensure(progress=self._progress)

    def convert(self, source: HFSource, scratch: Path, precision: str, progress: ProgressFn) -> ConvertedModel:
        venv = EXPORTER.ensure(progress=self._progress)  # made by check(); a no-op here
        prepared = linked_copy(source, scratch / "input.partial", exported_dtype(source.config, source.folder))
        output = scratch / precision

        def on_line(line: str) -> None:
            for pattern, what, done in _STAGES:
                if pattern.search(line):
                    progress(what, done)

        cmd = [str(venv / "bin" / "python"), "-m", "optimum.commands.optimum_cli", "export", "openvino",
               "-m", str(prepared), "--task", "text-generation-with-past", "--weight-format", precision]
        if precision == "int4":
            cmd += ["--group-size", str(int4_group_size(source.config))]
        cmd.append(str(output))
        # Nothing of our environment may leak into the exporter's (our transformers on a PYTHONPATH),
        # and it must not reach for the hub: the source is a local folder.
        env = {"PYTHONPATH": "", "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "OPENVINO_TELEMETRY_OPTOUT": "1",
               "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
        run_converter(cmd, label="optimum-intel's OpenVINO exporter", extra="openvino", on_line=on_line, env=env,
                      cwd=scratch)
        check_export(output)
        # Our tokenizer reads the source's own files, not the exporter's re-save of them by
        # another transformers: the same ids as the torch engine on the source folder.
        for name in TOKENIZER_SOURCE_FILES:
            if (source.folder / name).is_file():
                shutil.copyfile(source.folder / name, output / name)
        for link in prepared.iterdir():
            link.unlink()
        prepared.rmdir()
        facts = {"parameters": parameter_count(source.folder), "architecture": source.architecture,
                 "precision": precision}
        (output / SOURCE_FACTS).write_text(json.dumps(facts, indent=2))
        notes = {"converter": f"optimum-cli export openvino (optimum-intel 2.2.0, openvino {OPENVINO_VERSION}) "
                              f"--weight-format {precision}"}
        return ConvertedModel(output.name, "openvino", self.engine, precision, notes)


def exported_dtype(config: dict, folder: Path) -> dict:
    """The config the exporter reads. optimum-intel loads a checkpoint whose config names no
    dtype with ``torch_dtype=None``, which transformers 5 takes as the stored tensors' dtype, and
    the IR keeps it: a bf16 checkpoint (as Phi ships) exported at ``--weight-format fp32`` gave
    bf16 weights, 7.6 GB for 3.8B instead of 15.3. When the config names a 16-bit dtype,
    optimum loads the model in the format asked for. So the copy's config states the stored
    dtype where the source's leaves it out."""
    if config.get("dtype") or config.get("torch_dtype"):
        return config
    stored = stored_dtype(folder)
    return {**config, "dtype": stored} if stored else config


def int4_group_size(config: dict) -> int:
    """NNCF's int4 groups split every matrix's input channels evenly or the export fails
    (SmolLM2's 576-wide hidden state with optimum's default 128): the largest group that fits
    every width, else per-channel (-1)."""
    widths = [int(config.get(key) or 0) for key in ("hidden_size", "intermediate_size")]
    heads, head_dim = config.get("num_attention_heads"), config.get("head_dim")
    if heads and head_dim:
        widths.append(int(heads) * int(head_dim))
    return next((group for group in (128, 64, 32) if all(w % group == 0 for w in widths if w)), -1)


def check_export(output: Path) -> None:
    """The exporter logs a failed tokenizer conversion at debug level and exits 0: say it here."""
    if not (output / MODEL_XML).is_file():
        raise ModelLoadError(f"optimum-intel's exporter wrote no {MODEL_XML} into {output}")
    missing = [name for name in TOKENIZER_FILES if not (output / name).is_file()]
    if missing:
        raise ModelLoadError(f"optimum-intel's exporter wrote no {' or '.join(missing)}: openvino-tokenizers "
                             "could not convert this model's tokenizer (it says so only in its debug log)")


if __name__ == "__main__":  # `make install`: create the exporter's environment ahead of time
    print(EXPORTER.ensure())
