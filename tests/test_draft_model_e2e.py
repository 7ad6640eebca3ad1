"""Draft-model speculation on the real SmolLM2 GGUF: drafting for itself and for a requantized
(Q8_0) variant of itself — the one same-tokenizer pair here — through the engine, the Python
API, the CLI and the server; the tokens are those of decoding without drafts.

Engine tests use the batch-invariant setup (chunks under 64 rows per sequence, a KV stream per
sequence) in which llama.cpp computes every token the same way whatever the batch."""

from __future__ import annotations

import pytest
from engine_helpers import collect_tokens

from slmkit.backends.loading import BackendOptions
from slmkit.engine.engine import Engine, Request
from slmkit.errors import InvalidParameterError
from slmkit.types import SamplingParams

pytestmark = pytest.mark.slow

PASSAGE = ("The committee met on Tuesday to review the budget. It approved the new library, "
           "delayed the road repairs and asked for a report on the water supply by March.")
ASKS = [f"Repeat this text exactly:\n{PASSAGE}", f"Quote the second sentence of: {PASSAGE}",
        "def add(a, b):\n    return a + b\n\nRename add to plus and print the code back.",
        "Tell me a short story about a lighthouse.", "What is the capital of France?",
        f"Using only this context, what did the committee delay? Context: {PASSAGE}",
        "List three colors.", "Write a haiku about rain."]
GREEDY = SamplingParams(temperature=0, max_tokens=32)
INVARIANT = {"max_chunk_per_sequence": 63, "prefix_caching": False}


@pytest.fixture(scope="module")
def q8_path(smollm2_path, tmp_path_factory):
    """SmolLM2 requantized Q4_1 -> Q8_0 by our quantizer (llama.cpp's): same tokenizer, other weights."""
    from slmkit.store.quantize import quantize_gguf

    return quantize_gguf(smollm2_path, tmp_path_factory.mktemp("draft") / "smollm2-q8_0.gguf", "q8_0")


class Pair:
    """A target model and runner, and a drafter loaded for it through `load_draft_model`."""

    def __init__(self, target_path, draft_path, max_sequences=8):
        from slmkit.backends.draft import load_draft_model
        from slmkit.backends.llamacpp import LlamaCppModel

        self.model = LlamaCppModel(target_path)
        self.runner = self.model.create_runner(context_length=2048, max_sequences=max_sequences, unified_kv=False)
        self.draft = load_draft_model(str(draft_path), draft_path, BackendOptions(), target_name=str(target_path),
                                      target_tokenizer=self.model.tokenizer, target_runner=self.runner,
                                      unified_kv=False)

    def close(self):
        self.draft.close()
        self.runner.close()
        self.model.close()


@pytest.fixture(scope="module")
def chats(llm):
    return [llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": a}])) for a in ASKS]


def _draft_engine_tokens(pair, prompts, params):
    engine = Engine(pair.runner, pair.model.tokenizer, speculative="draft", draft_runner=pair.draft.runner,
                    **INVARIANT)
    outputs = {f"r{i}": [] for i in range(len(prompts))}
    for i, prompt in enumerate(prompts):
        engine.add_request(Request(list(prompt), params, f"r{i}"), lambda out, s=outputs[f"r{i}"]: s.extend(out.token_ids))
    engine.run_until_done()
    assert pair.runner.used_cells() == 0 and pair.draft.runner.used_cells() == 0  # both freed
    return [outputs[f"r{i}"] for i in range(len(prompts))], engine.stats


@pytest.mark.parametrize("target_is_q8", [False, True], ids=["drafting-for-itself", "drafting-for-q8_0"])
def test_greedy_equals_plain_single_and_8_concurrent(smollm2_path, q8_path, chats, target_is_q8):
    pair = Pair(q8_path if target_is_q8 else smollm2_path, smollm2_path)
    try:
        drafted = accepted = 0
        for group in ([chats[0]], [chats[3]], chats):
            plain = collect_tokens(pair.runner, pair.model.tokenizer, group, GREEDY, **INVARIANT)
            spec, stats = _draft_engine_tokens(pair, group, GREEDY)
            assert spec == plain
            assert stats.draft_seconds > 0 and stats.draft_forwards > 0
            drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
    finally:
        pair.close()
    rate = accepted / drafted
    print(f"\nSmolLM2 Q4_1 drafting for {'Q8_0' if target_is_q8 else 'itself'}: "
          f"{accepted} of {drafted} drafted tokens accepted ({rate:.1%})")
    # For itself the drafter computes exactly what the target does (batch-invariant kernels).
    assert rate >= (0.5 if target_is_q8 else 0.98)


def test_sampled_requests_with_a_seed_reproduce(smollm2_path, chats):
    pair = Pair(smollm2_path, smollm2_path)
    try:
        runs = []
        for _ in range(2):
            params = [SamplingParams(temperature=0.9, max_tokens=24, seed=seed) for seed in range(len(chats))]
            engine = Engine(pair.runner, pair.model.tokenizer, speculative="draft", draft_runner=pair.draft.runner,
                            **INVARIANT)
            out = {i: [] for i in range(len(chats))}
            for i, prompt in enumerate(chats):
                engine.add_request(Request(list(prompt), params[i], f"r{i}"), lambda o, s=out[i]: s.extend(o.token_ids))
            engine.run_until_done()
            assert engine.stats.drafted > 0
            runs.append(out)
        assert runs[0] == runs[1]
    finally:
        pair.close()


def test_stop_string_max_tokens_and_abort_stay_exact_and_free_both_runners(smollm2_path, chats):
    pair = Pair(smollm2_path, smollm2_path)
    try:
        tok = pair.model.tokenizer
        plain = collect_tokens(pair.runner, tok, [chats[0]], GREEDY.updated(max_tokens=40), **INVARIANT)[0]
        text = tok.decode(plain)
        stop = text[12:16]  # past the first draft: inside an accepted one
        stopped = GREEDY.updated(max_tokens=40, stop=[stop])
        want = collect_tokens(pair.runner, tok, [chats[0]], stopped, **INVARIANT)
        got, stats = _draft_engine_tokens(pair, [chats[0]], stopped)
        assert got == want and len(got[0]) < len(plain) and stats.accepted > 0
        for max_tokens in (1, 2, 5, 9):
            params = GREEDY.updated(max_tokens=max_tokens)
            got, _ = _draft_engine_tokens(pair, chats[:3], params)
            assert got == collect_tokens(pair.runner, tok, chats[:3], params, **INVARIANT)
            assert all(len(t) == max_tokens for t in got)
        # Abort one request mid-run (prefix caching on): its slot is freed in both runners at once.
        engine = Engine(pair.runner, tok, speculative="draft", draft_runner=pair.draft.runner,
                        max_chunk_per_sequence=63)
        freed = {}

        def emit(out, sink=[]):
            sink.extend(out.token_ids)
            if len(sink) >= 7 and "r0" in engine._active:
                slot = engine._active["r0"].seq.seq_id
                engine.abort("r0")
                freed["lengths"] = (pair.runner.sequence_length(slot), pair.draft.runner.sequence_length(slot))

        engine.add_request(Request(list(chats[0]), GREEDY, "r0"), emit)
        engine.add_request(Request(list(chats[1]), GREEDY, "r1"), lambda out: None)
        engine.run_until_done()
        assert freed["lengths"] == (0, 0) and engine.stats.drafted > 0
        for slot in range(pair.runner.max_sequences):  # what is left is r1's cached prefix, in step
            assert pair.draft.runner.sequence_length(slot) == len(engine.drafter.held(slot))
    finally:
        pair.close()


def test_python_api(slmkit_home, llm, smollm2_path):
    from slmkit import LLM

    prompt = llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": "Repeat exactly: one two "
                                                        "three four five, one two three four five."}]))
    with LLM("smollm2:original", context_length=2048, max_sequences=2, draft_model=str(smollm2_path)) as spec:
        assert spec.speculative == "draft"  # the default once a draft model is given
        out = spec.generate(prompt, GREEDY)
        assert out.token_ids == llm.generate(prompt, GREEDY).token_ids
        assert out.timings.drafted_tokens > 0 and out.timings.accepted_tokens > 0 and out.timings.draft_seconds > 0
        assert spec.generate(prompt, GREEDY.updated(speculative="off")).timings.drafted_tokens == 0
        assert spec.generate(prompt, GREEDY.updated(speculative="ngram")).token_ids == out.token_ids
    with pytest.raises(InvalidParameterError, match="speculative: 'draft' needs a draft model"):
        LLM("smollm2:original", speculative="draft")
    with pytest.raises(InvalidParameterError, match="speculative: 'draft' needs a draft model"):
        llm.generate(prompt, GREEDY.updated(speculative="draft"))
    with pytest.raises(InvalidParameterError, match="draft_model: .* runs at its provider"):
        LLM("github:Phi-3.5-mini-instruct", draft_model="smollm2")


def test_a_draft_model_with_another_tokenizer_is_refused(slmkit_home, smollm2_path, tmp_path):
    from gguf import GGUFReader, GGUFValueType
    from gguf_edit import encode_value, rewrite

    from slmkit import LLM

    with pytest.raises(InvalidParameterError, match="draft_model: gemma3-270m:original has a vocabulary of "
                                                    "262144 tokens and smollm2:original 49152"):
        LLM("smollm2:original", context_length=512, max_sequences=1, draft_model="gemma3-270m:original")
    field = GGUFReader(smollm2_path).fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]) for i in field.data]
    tokens[30000] = b"<renamed-token>"
    other = rewrite(smollm2_path, tmp_path / "other.gguf", changes={
        "tokenizer.ggml.tokens": encode_value(GGUFValueType.ARRAY, tokens, GGUFValueType.STRING)})
    with pytest.raises(InvalidParameterError, match="different tokenizers: token id 30000 is '<renamed-token>' "
                                                    "in the draft"):
        LLM("smollm2:original", context_length=512, max_sequences=1, draft_model=str(other))


def test_cli_flag_and_its_errors(slmkit_home):
    from test_cli import assert_one_line_error, slm

    from slmkit.store.store import ModelStore

    ModelStore(progress=False).resolve("gemma3-270m:original")  # assembled now, not inside a command below
    prompt = "Repeat exactly: red green blue, red green blue."
    args = ["generate", "smollm2:original", prompt, "-n", "16", "--temperature", "0"]
    plain = slm(*args)
    spec = slm(*args, "--draft-model", "smollm2:original", "--verbose")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr
    assert spec.stdout == plain.stdout
    assert "drafted tokens accepted" in spec.stderr and "draft model:" in spec.stderr
    assert_one_line_error(slm(*args, "--speculative", "draft"), "--speculative: 'draft' needs a draft model")
    assert_one_line_error(slm("serve", "--speculative", "draft"), "--speculative: 'draft' needs a draft model")
    assert_one_line_error(slm("serve", "--draft-model", "smollm2:original"), "--draft-model", "--model")
    assert_one_line_error(slm("serve", "--model", "smollm2:original", "--draft-model", "gemma3-270m:original"),
                          "--draft-model: gemma3-270m:original has a vocabulary of 262144 tokens")
    assert_one_line_error(slm("serve", "--model", "smollm2:original", "--backend", "vllm", "--draft-model",
                              "smollm2:original"), "--draft-model: --backend vllm runs vLLM's own engine")
    assert_one_line_error(slm("serve", "--model", "smollm2:original", "--draft-model", "github:Phi-3.5-mini-instruct"),
                          "--draft-model", "is a provider model")
    assert_one_line_error(slm(*args, "--draft-model", "no-such-model"), "no-such-model")


def test_server_with_the_openai_client(slmkit_home, q8_path, server):
    import httpx
    import openai
    from server_process import ServerProcess

    messages = [{"role": "user", "content": "Copy this line back exactly: the red fox and the blue fox ran "
                                            "to the old mill by the river."}]
    proc = ServerProcess("--model", "smollm2:original", "--parallel", "2", "--batch-invariant",
                         "--draft-model", str(q8_path))
    try:
        client = openai.OpenAI(base_url=f"{proc.base}/v1", api_key="unused", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="smollm2:original", messages=messages, temperature=0,
                                                max_tokens=40)
        m = proc.metrics()
        drafted = m['slmkit_speculative_drafted_tokens_total{model="smollm2:original"}']
        accepted = m['slmkit_speculative_accepted_tokens_total{model="smollm2:original"}']
        assert drafted > 0 and 0 < accepted <= drafted
        assert m['slmkit_speculative_draft_model_seconds_total{model="smollm2:original"}'] > 0
        off = client.chat.completions.create(model="smollm2:original", messages=messages, temperature=0,
                                             max_tokens=40, extra_body={"speculative": "off"})
        assert answer.choices[0].message.content == off.choices[0].message.content
        assert proc.metrics()['slmkit_speculative_drafted_tokens_total{model="smollm2:original"}'] == drafted
        ollama = httpx.post(f"{proc.base}/api/chat", json={"model": "smollm2:original", "messages": messages,
                                                           "stream": False, "options": {"temperature": 0,
                                                                                        "num_predict": 40}},
                            timeout=120)
        assert ollama.json()["message"]["content"] == off.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="speculative"):
            client.chat.completions.create(model="smollm2:original", messages=messages,
                                           extra_body={"speculative": "medusa"})
    finally:
        proc.stop()
    # A server without a draft model refuses a request for one, in OpenAI's error shape.
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="smollm2", messages=messages, extra_body={"speculative": "draft"})
    assert caught.value.body["param"] == "speculative" and "needs a draft model" in caught.value.body["message"]


def test_torch_engine_drafts_too(smollm2_path):
    """The torch runner (SmolLM2's GGUF dequantized into our own model) as target and drafter."""
    from slmkit import LLM

    with LLM(str(smollm2_path), backend="torch", context_length=512, max_sequences=1,
             draft_model=str(smollm2_path)) as spec:
        assert type(spec.draft.runner).__name__ == "TorchRunner"
        prompt = spec.encode_prompt(spec.apply_chat_template([{"role": "user", "content": "Repeat exactly: "
                                                               "one two three, one two three."}]))
        params = GREEDY.updated(max_tokens=16)
        out = spec.generate(prompt, params)
        assert out.timings.drafted_tokens > 0 and out.timings.accepted_tokens > 0
        assert out.token_ids == spec.generate(prompt, params.updated(speculative="off")).token_ids
