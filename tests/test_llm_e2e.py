"""End to end on the real SmolLM2-135M GGUF: what a 135M model can do, tested exactly."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from slmkit import SamplingParams
from slmkit.errors import ContextLengthError, InvalidParameterError

GREEDY = SamplingParams(temperature=0, max_tokens=16)


def raw_greedy(path, prompt_ids: list[int], n: int) -> list[int]:
    """The leanest llama-cpp-python low-level greedy loop: the reference we must match."""
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 512
    ctx = llama_cpp.llama_init_from_model(model, params)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    try:
        tokens = (llama_cpp.llama_token * len(prompt_ids))(*prompt_ids)
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, len(prompt_ids))) == 0
        out = []
        for _ in range(n):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            token = int(np.argmax(logits))
            out.append(token)
            one = (llama_cpp.llama_token * 1)(token)
            assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
        return out
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def test_completes_capital_of_france(llm):
    out = llm.generate("The capital of France is", GREEDY)
    assert out.text.startswith(" Paris.")
    assert out.usage.prompt_tokens == 5
    assert out.usage.completion_tokens == len(out.token_ids) == 16
    assert out.finish_reason == "length"


def test_greedy_equals_raw_llama_cpp_loop(llm, smollm2_path):
    for prompt in ["The capital of France is", "def fibonacci(n):", "Once upon a time"]:
        ids = llm.encode_prompt(prompt)
        ours = llm.generate(ids, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)).token_ids
        assert ours == raw_greedy(smollm2_path, ids, 32), prompt


def test_chat_answers_and_ends_at_end_of_turn(llm):
    out = llm.chat([{"role": "user", "content": "What is 2 + 2?"}], SamplingParams(temperature=0, max_tokens=128))
    assert "4" in out.text
    assert out.finish_reason == "stop"
    assert llm.tokenizer.token_text(out.token_ids[-1]) == "<|im_end|>"
    assert "<|im_end|>" not in out.text


def test_manifest_system_prompt_is_used(llm):
    prompt = llm.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_stream_deltas_join_to_the_whole_answer(llm):
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    params = SamplingParams(temperature=0, max_tokens=64)
    whole = llm.chat(messages, params)
    deltas = list(llm.chat(messages, params, stream=True))
    assert "".join(d.text for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert deltas[-1].finish_reason == whole.finish_reason and all(d.finish_reason is None for d in deltas[:-1])
    assert llm.runner.used_cells() == 0  # the sequence is freed when the stream ends


def test_abandoned_stream_frees_its_sequence(llm):
    stream = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=50), stream=True)
    next(stream), next(stream)
    assert llm.runner.used_cells() > 0
    stream.close()
    assert llm.runner.used_cells() == 0


def test_stop_string_is_never_emitted(llm):
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=16, stop=["."]))
    assert out.text == " Paris"
    assert out.finish_reason == "stop"


def test_generator_loop_rewind_reproduces_tokens(llm):
    with llm.generator(SamplingParams(temperature=0, max_tokens=12)) as gen:
        prompt = llm.tokenizer.encode("The capital of France is")
        gen.append_tokens(prompt)
        text = ""
        while not gen.is_done():
            gen.generate_next_token()
            text += llm.tokenizer.decode(gen.get_next_tokens())
        assert text.startswith(" Paris.")
        first = gen.get_sequence()
        gen.rewind_to(len(prompt) + 3)
        assert gen.token_count == len(prompt) + 3
        while not gen.is_done():
            gen.generate_next_token()
        assert gen.get_sequence() == first


def test_set_logits_forces_the_next_token(llm):
    with llm.generator(SamplingParams(temperature=0, max_tokens=4)) as gen:
        gen.append_tokens(llm.tokenizer.encode("The capital of France is"))
        logits = gen.get_logits()
        assert logits.shape == (llm.tokenizer.vocab_size,)
        forced = llm.tokenizer.encode(" London", add_special=False)[0]
        logits[forced] = logits.max() + 10
        gen.set_logits(logits)
        assert gen.generate_next_token() == forced


def test_seed_reproduces_sampling(llm):
    params = SamplingParams(temperature=1.0, max_tokens=24, seed=1234)
    a = llm.generate("Once upon a time", params).token_ids
    b = llm.generate("Once upon a time", params).token_ids
    c = llm.generate("Once upon a time", params.updated(seed=99)).token_ids
    assert a == b
    assert a != c


def test_logits_processor_and_logit_bias_steer_output(llm):
    paris = llm.tokenizer.encode(" Paris", add_special=False)[0]

    def ban_paris(token_ids, logits):
        logits[paris] = -np.inf
        return logits

    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8, logits_processors=[ban_paris]))
    assert paris not in out.token_ids
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8, logit_bias={paris: -100}))
    assert paris not in out.token_ids


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(llm):
    prompt = llm.encode_prompt("The capital of France is")
    greedy = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)).token_ids
    beam = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=6, num_beams=3, ignore_eos=True,
                                               length_penalty=0.0)).token_ids

    def logprob(tokens):
        with llm.generator(SamplingParams(temperature=0)) as gen:
            gen.append_tokens(prompt)
            total = 0.0
            for t in tokens:
                row = gen.get_logits().astype(np.float64)
                total += row[t] - (np.log(np.exp(row - row.max()).sum()) + row.max())
                gen.set_logits(np.where(np.arange(len(row)) == t, 0.0, -np.inf))
                gen.generate_next_token()
            return total

    assert len(beam) == 6
    assert logprob(beam) >= logprob(greedy) - 1e-4
    assert llm.runner.used_cells() == 0


def test_prompt_longer_than_context_is_a_clear_error(llm):
    with pytest.raises(ContextLengthError, match="context holds 2048"):
        llm.generate("hello " * 3000, GREEDY)
    assert llm.runner.used_cells() == 0


def test_bad_parameters_name_the_field():
    with pytest.raises(InvalidParameterError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(InvalidParameterError, match="top_p"):
        SamplingParams(top_p=1.5)
    with pytest.raises(InvalidParameterError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(InvalidParameterError, match="nonsense"):
        SamplingParams().updated(nonsense=1)
