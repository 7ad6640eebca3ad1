"""The torch engine end to end: SmolLM2 from the bundled GGUF against llama.cpp, batching through
the engine, and a Hugging Face folder through the Python API, `slm import`, the CLI and the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_helpers import collect_tokens  # noqa: E402
from hf_fixtures import reference_chat, write_tiny_checkpoint  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.errors import InvalidParameterError, ModelLoadError  # noqa: E402

SLM = str(Path(sys.executable).with_name("slm"))
GREEDY32 = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time",
           "The largest planet in the solar system is"]
QUESTIONS = ["What is 2 + 2?", "Hello! Who are you?"]


@pytest.fixture(scope="module")
def torch_smollm2(smollm2_path):
    model = LLM(str(smollm2_path), backend="torch", max_sequences=4, context_length=512)
    yield model
    model.close()


@pytest.fixture(scope="module")
def llamacpp_f32(smollm2_path, tmp_path_factory):
    """llama.cpp on the exact dequantization of the same weights (F32 GGUF)."""
    from slmkit.store.quantize import quantize_gguf

    path = quantize_gguf(smollm2_path, tmp_path_factory.mktemp("f32") / "smollm2-f32.gguf", "f32")
    model = LLM(str(path), max_sequences=2, context_length=512)
    yield model
    model.close()


def test_smollm2_gguf_on_torch_equals_llamacpp_on_the_same_weights(torch_smollm2, llamacpp_f32):
    assert torch_smollm2.backend == "torch" and llamacpp_f32.backend == "llamacpp"
    for prompt in PROMPTS:
        assert torch_smollm2.generate(prompt, GREEDY32).token_ids == llamacpp_f32.generate(prompt, GREEDY32).token_ids
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        assert torch_smollm2.chat(messages, GREEDY32).token_ids == llamacpp_f32.chat(messages, GREEDY32).token_ids


def test_smollm2_on_torch_answers_like_the_model(torch_smollm2):
    out = torch_smollm2.generate("The capital of France is", SamplingParams(max_tokens=4, temperature=0))
    assert out.text.startswith(" Paris")
    answer = torch_smollm2.chat([{"role": "user", "content": "What is 2 + 2?"}],
                                SamplingParams(max_tokens=128, temperature=0))
    assert "4" in answer.text and answer.finish_reason == "stop"


def test_engine_batches_torch_sequences_like_alone(torch_smollm2):
    """Eight greedy requests decoded together through the batching engine equal each alone."""
    from slmkit.backends.torch_runner import TorchRunner

    model = torch_smollm2.model.model
    tokenizer = torch_smollm2.tokenizer
    prompts = [tokenizer.encode(p, add_special=False) for p in PROMPTS + ["1, 2, 3,", "Hello", "Paris is", "A B C"]]
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    alone = [collect_tokens(TorchRunner(model, context_length=256, max_sequences=1), tokenizer, [p], params)[0]
             for p in prompts]
    together = collect_tokens(TorchRunner(model, context_length=256, max_sequences=8, max_batch_tokens=64),
                              tokenizer, prompts, params)
    assert together == alone


def test_torch_generator_rewind_and_beam_search(torch_smollm2):
    with torch_smollm2.generator(SamplingParams(temperature=0, max_tokens=8)) as gen:
        gen.append_tokens(torch_smollm2.encode_prompt("The capital of France is"))
        first = [gen.generate_next_token() for _ in range(4)]
        gen.rewind_to(gen.token_count - 4)
        assert [gen.generate_next_token() for _ in range(4)] == first
    beams = torch_smollm2.generate("The capital of France is", SamplingParams(max_tokens=6, num_beams=2))
    assert beams.text.strip()


# -- Hugging Face folders -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_phi3(tmp_path_factory):
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("hf") / "tiny-phi3", "phi3")
    ids, answer = reference_chat(folder, "What is 2 + 2?", 24)
    return folder, ids, answer


def test_hf_folder_runs_on_torch_with_transformers_answer(tiny_phi3):
    folder, ids, answer = tiny_phi3
    with LLM(str(folder)) as llm:
        assert llm.backend == "torch" and llm.info.architecture == "phi3"
        messages = [{"role": "user", "content": "What is 2 + 2?"}]
        assert llm.encode_prompt(llm.apply_chat_template(messages)) == ids
        out = llm.chat(messages, SamplingParams(max_tokens=24, temperature=0))
        assert out.text == answer


def test_slm_import_then_run_and_serve_a_hf_folder(tiny_phi3, slmkit_home):
    from openai import OpenAI
    from server_process import ServerProcess

    folder, _, answer = tiny_phi3
    done = subprocess.run([SLM, "import", str(folder), "--name", "tiny-phi3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([SLM, "list"], capture_output=True, text=True).stdout
    assert "tiny-phi3:original" in listed
    shown = subprocess.run([SLM, "show", "tiny-phi3"], capture_output=True, text=True)
    assert shown.returncode == 0 and "phi3" in shown.stdout, shown.stderr
    ran = subprocess.run([SLM, "run", "tiny-phi3", "What is 2 + 2?", "--max-tokens", "24", "--temperature", "0"],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip("\n") == answer.rstrip("\n")

    server = ServerProcess("--model", "tiny-phi3", "--parallel", "2", "--context-length", "256")
    try:
        client = OpenAI(base_url=f"{server.base}/v1", api_key="none")
        reply = client.chat.completions.create(model="tiny-phi3", max_tokens=24, temperature=0,
                                               messages=[{"role": "user", "content": "What is 2 + 2?"}])
        assert reply.choices[0].message.content == answer
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny-phi3", max_tokens=24, temperature=0, stream=True,
            messages=[{"role": "user", "content": "What is 2 + 2?"}]) if c.choices)
        assert streamed == answer
    finally:
        server.stop()


def test_backend_errors_are_clear(tiny_phi3, tmp_path):
    folder, _, _ = tiny_phi3
    with pytest.raises(InvalidParameterError, match="the llamacpp engine cannot run it"):
        LLM(str(folder), backend="llamacpp")
    with pytest.raises(InvalidParameterError, match="not one of"):
        LLM(str(folder), backend="onnx")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}')
    with pytest.raises(InvalidParameterError, match="the torch engine cannot run it — use --backend transformers"):
        LLM(str(broken), backend="torch")
    with pytest.raises(ModelLoadError, match="transformers cannot load"):  # auto picks transformers; no weights
        LLM(str(broken))
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        LLM(str(broken))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_path_gives_the_cpu_answer(smollm2_path, torch_smollm2):
    with LLM(str(smollm2_path), backend="torch", device="cuda", dtype="float32", max_sequences=2) as gpu:
        prompt = "The capital of France is"
        params = SamplingParams(max_tokens=8, temperature=0)
        assert gpu.generate(prompt, params).text == torch_smollm2.generate(prompt, params).text


def test_cuda_asked_without_a_gpu_is_a_clear_error(smollm2_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InvalidParameterError, match="torch sees no GPU"):
        LLM(str(smollm2_path), backend="torch", device="cuda")


def test_torch_runner_all_logits_match_one_token_steps(torch_smollm2):
    """Scoring (perplexity, multiple choice) reads every position's logits in one chunk."""
    import numpy as np

    from slmkit.backends.base import Chunk
    from slmkit.backends.torch_runner import TorchRunner

    ids = torch_smollm2.tokenizer.encode("The capital of France is Paris.", add_special=False)
    runner = TorchRunner(torch_smollm2.model.model, context_length=64, max_sequences=2)
    together = runner.forward([Chunk(0, ids, 0, all_logits=True), Chunk(1, ids[:3], 0)])
    assert together.shape == (len(ids) + 1, runner.vocab_size)
    steps = np.stack([runner.forward([Chunk(1, [t], 3 + i)])[0].copy() for i, t in enumerate(ids[3:])])
    assert np.abs(together[len(ids) - 1] - together[len(ids)]).max() > 0  # rows are in chunk order
    assert np.allclose(together[:3][-1], together[len(ids)], atol=1e-4)
    assert np.allclose(together[3:len(ids) - 1], steps[:-1], atol=1e-4)


def test_bfloat16_on_cpu_stays_close_to_float32(smollm2_path, torch_smollm2):
    import numpy as np

    from slmkit.backends.base import Chunk

    with LLM(str(smollm2_path), backend="torch", dtype="bfloat16", max_sequences=1, context_length=64) as bf16:
        assert bf16.info.file_type == "bfloat16"
        ids = bf16.encode_prompt("The capital of France is")
        low = bf16.runner.forward([Chunk(0, ids, 0)])[0]
        bf16.runner.free(0)
    torch_smollm2.runner.free(3)
    high = torch_smollm2.runner.forward([Chunk(3, ids, 0)])[0]
    torch_smollm2.runner.free(3)
    assert low.dtype == np.float32 and int(low.argmax()) == int(high.argmax())
    assert np.corrcoef(low, high)[0, 1] > 0.99
