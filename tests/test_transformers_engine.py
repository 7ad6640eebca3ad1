"""The transformers engine: a tiny random Qwen2 (an architecture our torch engine lacks) picked by
``--backend auto`` through the Python API, the CLI and the server, against transformers' own
``generate``; the tiny Phi-3 (plain and longrope) on ``--backend transformers`` against our native
torch engine; the runner seam (rewind, prefix copy, every-position logits, batching); a folder that
brings its own model code (a Llama subclass written here), refused without --trust-remote-code and
equal to the native engine with it; a tokenizer without tokenizer.json; the one-line errors."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from engine_helpers import collect_tokens  # noqa: E402
from hf_fixtures import CORPUS, LONGROPE_ORIGINAL, write_sp_checkpoint, write_tiny_checkpoint  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.backends.base import Chunk  # noqa: E402
from slmkit.errors import BackendUnavailableError, InvalidParameterError, ModelLoadError  # noqa: E402

SLM = str(Path(sys.executable).with_name("slm"))
PROMPTS = ["What is 2 + 2?", "The capital of France is", "Hello! How can I", "Summarize the text",
           "Small language models run on"]
GREEDY = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)

REMOTE_MODULE = '''"""A model that ships as code beside its weights (config.json auto_map), like Phi-3-small."""
from transformers import LlamaConfig, LlamaForCausalLM


class TinyRemoteConfig(LlamaConfig):
    model_type = "tiny_remote"


class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
'''


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SLM, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformers-engine")
    llama = write_tiny_checkpoint(root / "llama", "llama", seed=4)
    remote = root / "remote"
    shutil.copytree(llama, remote)
    (remote / "modeling_tiny_remote.py").write_text(REMOTE_MODULE)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="tiny_remote", architectures=["TinyRemoteForCausalLM"], auto_map={
        "AutoConfig": "modeling_tiny_remote.TinyRemoteConfig",
        "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteForCausalLM"})
    (remote / "config.json").write_text(json.dumps(config))
    return {"qwen2": write_tiny_checkpoint(root / "qwen2", "qwen2", seed=3),
            "phi3": write_sp_checkpoint(root / "phi3", seed=5),
            "phi3-longrope": write_sp_checkpoint(root / "phi3-longrope", longrope=True, seed=1),
            "mistral": write_tiny_checkpoint(root / "mistral", "mistral", seed=6), "llama": llama, "remote": remote}


@pytest.fixture(scope="module")
def qwen2(folders):
    with LLM(str(folders["qwen2"]), max_sequences=4, context_length=256) as llm:
        yield llm


def transformers_greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(ids):].tolist()


def test_auto_runs_qwen2_on_transformers_with_its_greedy_ids(folders, qwen2):
    assert qwen2.backend == "transformers" and qwen2.info.architecture == "qwen2"
    reference = transformers.AutoModelForCausalLM.from_pretrained(folders["qwen2"]).eval()
    for prompt in PROMPTS:
        ids = qwen2.encode_prompt(prompt)
        assert qwen2.generate(ids, GREEDY).token_ids == transformers_greedy(reference, ids, 16), prompt
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    ids = qwen2.encode_prompt(qwen2.apply_chat_template(messages))
    assert qwen2.chat(messages, GREEDY).token_ids == transformers_greedy(reference, ids, 16)


@pytest.mark.parametrize("name", ["phi3", "phi3-longrope", "llama"])
def test_backend_transformers_gives_the_native_engines_greedy_ids(folders, name):
    prompts = PROMPTS
    if name == "phi3-longrope":  # prompts below the switch that generate past it: the cache is recomputed
        prompts = [CORPUS[i] for i in (0, 2, 4)]
    params = SamplingParams(max_tokens=48, temperature=0, ignore_eos=True)
    with LLM(str(folders[name]), backend="transformers", max_sequences=2, context_length=256) as theirs, \
            LLM(str(folders[name]), backend="torch", max_sequences=2, context_length=256) as ours:
        assert theirs.backend == "transformers" and ours.backend == "torch"
        for prompt in prompts:
            ids = ours.encode_prompt(prompt)
            assert theirs.encode_prompt(prompt) == ids
            if name == "phi3-longrope":
                assert len(ids) < LONGROPE_ORIGINAL < len(ids) + 48, len(ids)
            assert theirs.generate(ids, params).token_ids == ours.generate(ids, params).token_ids, prompt


def test_runner_rewinds_copies_prefixes_scores_every_position_and_batches(folders, qwen2):
    runner = qwen2.model.create_runner(context_length=128, max_sequences=3)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folders["qwen2"]).eval()
    ids = qwen2.encode_prompt("What is 2 + 2? The answer is 4.")
    every = runner.forward([Chunk(0, ids, 0, all_logits=True)])
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    assert every.shape == (len(ids), runner.vocab_size)
    np.testing.assert_allclose(every, expected, atol=1e-5, rtol=1e-5)
    runner.truncate(0, 3)
    assert runner.sequence_length(0) == 3
    again = runner.forward([Chunk(0, ids[3:6], 3)])
    np.testing.assert_allclose(again[0], expected[5], atol=1e-5, rtol=1e-5)
    runner.copy_prefix(0, 1, 5)
    assert runner.sequence_length(1) == 5
    branch = runner.forward([Chunk(1, ids[5:8], 5), Chunk(0, ids[6:7], 6), Chunk(2, ids[:4], 0, want_logits=False)])
    np.testing.assert_allclose(branch, expected[[7, 6]], atol=1e-5, rtol=1e-5)
    runner.free(1)
    assert runner.sequence_length(1) == 0 and runner.used_cells() == 7 + 4
    prompts = [qwen2.encode_prompt(p) for p in PROMPTS[:4]]
    alone = [qwen2.generate(p, GREEDY).token_ids for p in prompts]
    assert collect_tokens(qwen2.model.create_runner(max_sequences=4), qwen2.tokenizer, prompts, GREEDY) == alone


def test_a_full_sliding_window_rewinds_by_running_the_kept_tokens_again(folders):
    """Mistral's window (8 here) drops old keys, so its cache cannot crop back past them."""
    with LLM(str(folders["mistral"]), max_sequences=2, context_length=128) as llm:
        assert llm.backend == "transformers"
        runner = llm.runner
        ids = llm.encode_prompt("What is 2 + 2? The answer is 4. The capital of France is Paris.")
        assert len(ids) > 16
        with torch.no_grad():
            reference = transformers.AutoModelForCausalLM.from_pretrained(folders["mistral"]).eval()
            expected = reference(torch.tensor([ids])).logits[0].numpy()
        np.testing.assert_allclose(runner.forward([Chunk(0, ids, 0, all_logits=True)]), expected, atol=1e-5, rtol=1e-5)
        runner.truncate(0, 12)
        assert runner.sequence_length(0) == 12
        np.testing.assert_allclose(runner.forward([Chunk(0, ids[12:], 12, all_logits=True)]), expected[12:],
                                   atol=1e-5, rtol=1e-5)
        # Each greedy token is the argmax of one cache-free forward over everything before it. (Not
        # compared with `generate`: in transformers 5.24 its sliding-window cache leaves that rule on
        # "The capital of France is" here, measured.)
        for prompt in PROMPTS[:2]:
            prompt_ids = llm.encode_prompt(prompt)
            out = llm.generate(prompt_ids, GREEDY).token_ids
            with torch.no_grad():
                full = reference(torch.tensor([prompt_ids + out])).logits[0, len(prompt_ids) - 1 : -1]
            assert out == full.argmax(-1).tolist()


def test_qwen2_through_the_cli_and_the_server(folders, qwen2, slmkit_home):
    from openai import OpenAI
    from server_process import ServerProcess

    done = slm("import", str(folders["qwen2"]), "--name", "tiny-qwen2")
    assert done.returncode == 0, done.stderr
    shown = json.loads(slm("show", "tiny-qwen2", "--json").stdout)
    assert shown["engines"][0] == {"engine": "transformers", "installed": True, "extra": "transformers"}
    mlx = ["mlx"] if importlib.util.find_spec("mlx_lm") else []  # mlx-lm has qwen2 and phi3 too
    assert [e["engine"] for e in shown["engines"]] == ["transformers", *mlx]
    phi3 = json.loads(slm("show", str(folders["phi3"]), "--json").stdout)
    assert [e["engine"] for e in phi3["engines"]] == ["torch", "transformers", *mlx]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    params = SamplingParams(max_tokens=12, temperature=0)
    answer = qwen2.chat(messages, params).text
    ran = slm("run", "tiny-qwen2", "What is 2 + 2?", "--max-tokens", "12", "--temperature", "0")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip("\n") == answer.rstrip("\n")
    generated = slm("generate", "tiny-qwen2", "The capital of France is", "-n", "12", "--temperature", "0")
    assert generated.returncode == 0 and generated.stdout.rstrip("\n") == \
        qwen2.generate("The capital of France is", params).text.rstrip("\n"), generated.stderr

    server = ServerProcess("--model", "tiny-qwen2", "--parallel", "2", "--context-length", "256")
    try:
        client = OpenAI(base_url=f"{server.base}/v1", api_key="none")
        reply = client.chat.completions.create(model="tiny-qwen2", max_tokens=12, temperature=0, messages=messages)
        assert reply.choices[0].message.content == answer
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny-qwen2", max_tokens=12, temperature=0, stream=True, messages=messages) if c.choices)
        assert streamed == answer
        server.wait_idle()
    finally:
        server.stop()


def test_remote_code_runs_only_with_the_flag(folders):
    remote = str(folders["remote"])
    with pytest.raises(ModelLoadError, match="pass --trust-remote-code"):
        LLM(remote)
    refused = slm("run", remote, "Hello", "-n", "4")
    assert refused.returncode != 0 and "--trust-remote-code" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr, refused.stderr
    with LLM(remote, trust_remote_code=True, max_sequences=2) as theirs, \
            LLM(str(folders["llama"]), backend="torch", max_sequences=2) as ours:
        assert theirs.backend == "transformers" and theirs.info.architecture == "tiny_remote"
        assert type(theirs.model.model).__name__ == "TinyRemoteForCausalLM"  # the folder's class, not Llama's
        for prompt in PROMPTS[:3]:
            ids = ours.encode_prompt(prompt)
            assert theirs.generate(ids, GREEDY).token_ids == ours.generate(ids, GREEDY).token_ids
        answer = theirs.chat([{"role": "user", "content": "Hello"}], SamplingParams(max_tokens=6, temperature=0)).text
    ran = slm("run", remote, "Hello", "-n", "6", "--temperature", "0", "--trust-remote-code")
    assert ran.returncode == 0 and ran.stdout.rstrip("\n") == answer.rstrip("\n"), ran.stderr
    # slm compare: the remote-code model on transformers beside the same weights on our torch engine
    compared = slm("compare", remote, str(folders["llama"]), "Hello", "--json", "-n", "6", "--temperature", "0",
                   "--trust-remote-code")
    assert compared.returncode == 0, compared.stderr
    texts = [r["text"] for r in json.loads(compared.stdout)["prompts"][0]["results"]]
    assert texts == [answer, answer]


def test_remote_code_only_from_inside_the_folder(folders, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folders["remote"], elsewhere)
    config = json.loads((elsewhere / "config.json").read_text())
    config["auto_map"]["AutoModelForCausalLM"] = "someone/repo--modeling_x.XForCausalLM"
    (elsewhere / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="another repository"):
        LLM(str(elsewhere), trust_remote_code=True)
    (elsewhere / "modeling_tiny_remote.py").unlink()
    config["auto_map"]["AutoModelForCausalLM"] = "modeling_tiny_remote.TinyRemoteForCausalLM"
    (elsewhere / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="lacks"):
        LLM(str(elsewhere), trust_remote_code=True)


def test_a_folder_without_tokenizer_json_uses_transformers_tokenizer(folders, tmp_path):
    """A bare SentencePiece tokenizer.model (string pieces, ▁ and byte fallback) through AutoTokenizer.
    (Its conversion in transformers 5.24 turns newlines and double spaces into one space, unlike the
    saved tokenizer.json: the prompts have neither.)"""
    bare = tmp_path / "bare"
    shutil.copytree(folders["phi3"], bare)
    (bare / "tokenizer.json").unlink()
    with LLM(str(bare), backend="transformers", max_sequences=2) as theirs, \
            LLM(str(folders["phi3"]), backend="torch", max_sequences=2) as ours:
        assert type(theirs.tokenizer).__name__ == "TransformersTokenizer"
        for prompt in [*PROMPTS, "Bonjour, ça va? 2 + 2 = 4 €"]:
            ids = ours.encode_prompt(prompt)
            assert theirs.encode_prompt(prompt) == ids
            assert theirs.tokenizer.decode(ids) == ours.tokenizer.decode(ids)
            assert b"".join(theirs.tokenizer.token_bytes(t) for t in ids) == \
                b"".join(ours.tokenizer.token_bytes(t) for t in ids)
            out, want = theirs.generate(ids, GREEDY), ours.generate(ids, GREEDY)
            assert (out.token_ids, out.text) == (want.token_ids, want.text)


def test_engine_choice_errors_and_the_missing_extra(folders, monkeypatch):
    from slmkit.backends.loading import NATIVE_MODEL_TYPES, engine_support
    from slmkit.models.registry import ARCHITECTURES

    assert NATIVE_MODEL_TYPES == set(ARCHITECTURES)  # the light list `auto` reads stays the registry's
    with pytest.raises(InvalidParameterError, match="use --backend transformers"):
        LLM(str(folders["qwen2"]), backend="torch")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if slmkit[transformers] were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'slmkit\[transformers\]'"):
        LLM(str(folders["qwen2"]))
    mlx = ["mlx (installed)"] if importlib.util.find_spec("mlx_lm") else []  # mlx-lm has qwen2 too
    assert [s.describe() for s in engine_support(folders["qwen2"])] == \
        ["transformers (needs pip install 'slmkit[transformers]')", *mlx]
