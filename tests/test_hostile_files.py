"""Hostile model files: truncated, corrupted and lying GGUF files (built from the bundled SmolLM2),
broken safetensors and absurd config.json values. Each is a clear one-line `ModelLoadError`, found
before llama.cpp or torch allocates anything or aborts the process: through the Python API, the
CLI and the server (which keeps serving its good model)."""

from __future__ import annotations

import json
import math
import shutil
import struct
import time
from pathlib import Path

import httpx
import openai
import pytest
from gguf_edit import f32, rewrite, string, tensor_record, u32
from server_process import ServerProcess
from test_cli import assert_one_line_error, slm

from slmkit import LLM
from slmkit.backends.gguf_header import check_gguf
from slmkit.errors import ModelLoadError
from slmkit.store.gguf_info import read_gguf_summary

DATA_OFFSET_PROBE = 24  # bytes of the fixed GGUF header: magic, version, tensor and KV counts


def _prefix(n: int):
    def build(src: Path, dst: Path) -> None:
        with open(src, "rb") as f:
            dst.write_bytes(f.read(n))
    return build


def _patch(offset: int, data: bytes):
    def build(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with open(dst, "r+b") as f:
            f.seek(offset)
            f.write(data)
    return build


# Header edits leave the tensor data as zeros (sparse): every check here reads the header only.
def _changes(**changes):
    return lambda src, dst: rewrite(src, dst, changes={k.replace("__", "."): v for k, v in changes.items()},
                                    copy_data=False)


def _tensor0(dims, ggml_type=8, offset=0):
    return lambda src, dst: rewrite(src, dst, tensor_info={"token_embd.weight": tensor_record(
        "token_embd.weight", dims, ggml_type, offset)}, copy_data=False)


# name -> (how to build it from the good file, a fragment the error must contain). The `aborts`
# ones made llama.cpp 0.3.36 abort the whole process (GGML_ASSERT) before slmkit checked them.
STRUCTURE = {
    "empty": (_prefix(0), "only 0 bytes"),
    "header_only": (_prefix(DATA_OFFSET_PROBE), "more than its 24 bytes can hold"),
    "cut_in_metadata": (_prefix(5000), "more than its 5000 bytes can hold"),
    "cut_in_vocabulary": (_prefix(400_000), "truncated or corrupted (in metadata 'tokenizer.ggml.tokens'"),
    "cut_in_weights": (_prefix(40_000_000), "is truncated: it has 40000000 bytes"),
    "last_byte_missing": (lambda s, d: d.write_bytes(s.read_bytes()[:-1]), "is truncated"),
    "bad_magic": (_patch(0, b"GGML"), "is not a GGUF file"),
    "future_version": (_patch(4, struct.pack("<I", 99)), "GGUF version 99"),
    "huge_kv_count": (_patch(16, struct.pack("<Q", 2**62)), "claims 4611686018427387904 metadata entries"),
    "huge_key_length": (_patch(24, struct.pack("<Q", 2**60)), "at most 65535 are allowed"),
    "template_not_utf8": (_changes(tokenizer__chat_template=string(b"\xff\xfe{{")), "not valid UTF-8"),
    "tensor_past_end": (_tensor0([576, 49152], offset=2**40), "is truncated"),
    "tensor_bad_type": (_tensor0([576, 49152], ggml_type=200), "unknown tensor type 200"),
    "tensor_huge_shape": (_tensor0([2**40, 2**40]), "more elements than any file can hold"),
    "tensor_five_dims": (_tensor0([576, 49152, 1, 1, 1]), "5 dimensions"),
}
ABORTS = {
    "no_layers": (_changes(llama__block_count=u32(0)), "llama.block_count = 0"),
    "million_layers": (_changes(llama__block_count=u32(10**6)), "llama.cpp runs 1 to 512 layers"),
    "million_experts": (_changes(llama__expert_count=u32(10**6), llama__expert_used_count=u32(2)),
                        "at most 1024 experts"),
    "experts_used_without_experts": (_changes(llama__expert_used_count=u32(2)), "there are no experts"),
    "unknown_rope_scaling": (_changes(llama__rope__scaling__type=string("bogus")), "rope.scaling.type"),
    "nan_norm_epsilon": (_changes(llama__attention__layer_norm_rms_epsilon=f32(math.nan)), "not a finite number"),
    "negative_norm_epsilon": (_changes(llama__attention__layer_norm_rms_epsilon=f32(-1.0)), "must not be negative"),
}
CASES = {**STRUCTURE, **ABORTS}


class _HostileFiles:
    """The case files, each built the first time a test asks for it."""

    def __init__(self, folder: Path, source: Path):
        self.folder, self.source = folder, source

    def __getitem__(self, name: str) -> Path:
        path = self.folder / f"{name}.gguf"
        if not path.exists():
            CASES[name][0](self.source, path)
        return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, smollm2_path) -> _HostileFiles:
    folder = tmp_path_factory.mktemp("hostile-gguf")
    yield _HostileFiles(folder, smollm2_path)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("case", list(CASES))
def test_header_check_names_the_problem(hostile, case):
    with pytest.raises(ModelLoadError) as err:
        check_gguf(hostile[case])
    assert CASES[case][1] in err.value.message
    assert "\n" not in err.value.message
    with pytest.raises(ModelLoadError):  # `slm show` / `slm import` read summaries through it
        read_gguf_summary(hostile[case])


def test_the_good_file_passes_and_lengths_are_not_trusted(smollm2_path, tmp_path):
    header = check_gguf(smollm2_path)
    assert header.architecture == "llama" and len(header.tensors) == 272
    assert header.metadata["tokenizer.ggml.tokens"].length == 49152
    # A copy through the rewriter is byte-for-byte loadable: the cases differ from it only where meant.
    same = rewrite(smollm2_path, tmp_path / "same.gguf")
    assert check_gguf(same).metadata["llama.block_count"] == 30


@pytest.mark.parametrize("case", list(STRUCTURE))
def test_python_api_refuses_broken_files(hostile, case):
    with pytest.raises(ModelLoadError, match="GGUF|truncated|UTF-8|tensor"):
        LLM(str(hostile[case]))


@pytest.mark.parametrize("case", list(ABORTS))
def test_cli_refuses_files_that_would_abort_llama_cpp(hostile, case):
    # A subprocess: were the check missing, llama.cpp would kill the process (exit -6), not pytest.
    result = slm("run", str(hostile[case]), "hi", timeout=60)
    assert_one_line_error(result, CASES[case][1])


def test_cli_show_and_import_refuse_a_truncated_file(hostile):
    assert_one_line_error(slm("show", str(hostile["cut_in_weights"])), "is truncated")
    assert_one_line_error(slm("import", str(hostile["no_layers"]), "--name", "broken"), "block_count = 0")


def test_torch_engine_refuses_a_gguf_whose_header_lies_about_sizes(tmp_path, smollm2_path):
    # llama.cpp's vocabulary-only load does not look at the layer sizes; the torch loader must,
    # before it builds a 10**5-wide model from 135M parameters of weights.
    lying = rewrite(smollm2_path, tmp_path / "wide.gguf", changes={"llama.embedding_length": u32(10**5)},
                    copy_data=False)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="parameters but the weight files hold"):
        LLM(str(lying), backend="torch", context_length=64)
    assert time.monotonic() - started < 60


# -- Hugging Face folders ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from hf_fixtures import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("hf-good"), "llama")


def _folder(checkpoint: Path, target: Path, *, config: dict | None = None, weights=None) -> Path:
    shutil.copytree(checkpoint, target)
    if config is not None:
        (target / "config.json").write_text(json.dumps({**json.loads((checkpoint / "config.json").read_text()),
                                                       **config}))
    if weights is not None:
        path = target / "model.safetensors"
        path.write_bytes(weights(path.read_bytes()))
    return target


def _header_edit(edit):
    def build(data: bytes) -> bytes:
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        edit(header[next(k for k in header if k != "__metadata__")])
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    return build


HF_CASES = {
    "hidden_size_1e9": (dict(config={"hidden_size": 10**9}), "parameters but the weight files hold"),
    "layers_1e6": (dict(config={"num_hidden_layers": 10**6}), "parameters but the weight files hold"),
    "vocab_1e12": (dict(config={"vocab_size": 10**12}), "parameters but the weight files hold"),
    "negative_hidden": (dict(config={"hidden_size": -64}), "hidden_size must be an integer of at least 1"),
    "fractional_hidden": (dict(config={"hidden_size": 64.5}), "hidden_size must be an integer"),
    "string_layers": (dict(config={"num_hidden_layers": "2"}), "num_hidden_layers must be an integer"),
    "zero_heads": (dict(config={"num_attention_heads": 0}), "num_attention_heads must be an integer"),
    "kv_heads_mismatch": (dict(config={"num_key_value_heads": 3}), "not a multiple of num_key_value_heads"),
    "truncated_weights": (dict(weights=lambda d: d[:len(d) // 2]), "not a readable safetensors file"),
    "empty_weights": (dict(weights=lambda d: b""), "not a readable safetensors file"),
    "huge_header_length": (dict(weights=lambda d: struct.pack("<Q", 2**60) + d[8:]), "header too large"),
    "garbage_header": (dict(weights=lambda d: d[:8] + b"\xff" * 64 + d[72:]), "not a readable safetensors"),
    "offsets_past_end": (dict(weights=_header_edit(lambda t: t.update(data_offsets=[0, 2**50]))),
                         "not a readable safetensors"),
    "huge_shape": (dict(weights=_header_edit(lambda t: t.update(shape=[2**40, 2**40]))), "not a readable"),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_folder_with_hostile_config_or_weights(checkpoint, tmp_path, case):
    build, fragment = HF_CASES[case]
    folder = _folder(checkpoint, tmp_path / case, **build)
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        LLM(str(folder), context_length=64)
    assert fragment in err.value.message and "\n" not in err.value.message
    assert time.monotonic() - started < 30  # refused up front, nothing big allocated


def test_config_json_that_is_not_an_object_or_too_big(checkpoint, tmp_path):
    folder = _folder(checkpoint, tmp_path / "list")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="not an object"):
        LLM(str(folder))
    (folder / "config.json").write_text(" " * (5 << 20) + "{}")
    with pytest.raises(ModelLoadError, match="not a model config"):
        LLM(str(folder))


def test_shard_index_cannot_point_outside_the_folder(checkpoint, tmp_path):
    folder = _folder(checkpoint, tmp_path / "sharded")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "../../etc/passwd"}}))
    with pytest.raises(ModelLoadError, match="outside the folder"):
        LLM(str(folder))


def test_cli_one_line_for_an_absurd_config(checkpoint, tmp_path):
    folder = _folder(checkpoint, tmp_path / "absurd", config={"hidden_size": 10**9})
    assert_one_line_error(slm("run", str(folder), "hi", timeout=120), "parameters but the weight files hold")
    assert_one_line_error(slm("show", str(_folder(checkpoint, tmp_path / "cut",
                                                  weights=lambda d: d[:100]))), "not a readable safetensors")


# -- the server -----------------------------------------------------------------------------------
def _store_entry(home: Path, name: str, file: Path) -> None:
    """A stored model whose file went bad after import (disk corruption, an interrupted copy)."""
    folder = home / "models" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": name, "variants": {"original": str(file)}}))


def test_server_answers_a_clean_error_for_a_broken_model_and_keeps_serving(hostile, tmp_path):
    home = tmp_path / "home"
    _store_entry(home, "truncated", hostile["cut_in_weights"])
    _store_entry(home, "layerless", hostile["no_layers"])  # would abort llama.cpp, and the server with it
    server = ServerProcess("--model", "smollm2", "--parallel", "2", "--context-length", "512",
                           env={"SLMKIT_HOME": str(home)})
    try:
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="none", max_retries=0)
        for name, fragment in (("truncated", "is truncated"), ("layerless", "block_count = 0")):
            with pytest.raises(openai.InternalServerError) as err:
                client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
            body = err.value.response.json()["error"]
            assert fragment in body["message"] and body["type"] == "server_error"
            ollama = httpx.post(f"{server.base}/api/generate", json={"model": name, "prompt": "hi"}, timeout=60)
            assert ollama.status_code == 500 and fragment in ollama.json()["error"]
        answer = client.chat.completions.create(model="smollm2", max_tokens=8, temperature=0,
                                                messages=[{"role": "user", "content": "What is 2 + 2?"}])
        assert answer.choices[0].message.content
        assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200
    finally:
        assert server.stop() in (0, -15), server.logs()
