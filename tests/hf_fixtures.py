"""Tiny Hugging Face checkpoints written by transformers itself: random weights, a byte-level BPE
or SentencePiece tokenizer trained here on a few sentences, a Phi-3 chat template and generation
config. Then what the conversion tests share: the set of checkpoints they convert, conversion into
a store, prompts, and the checks every converted model passes."""

from __future__ import annotations

from pathlib import Path

from slmkit.types import SamplingParams

PHI3_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]
CORPUS = [
    "What is 2 + 2? The answer is 4.", "The capital of France is Paris.",
    "Small language models run on a laptop CPU.", "Hello! How can I help you today?",
    "Translate to French: good morning. Bonjour.", "Summarize the text in three bullet points.",
] * 20


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def write_tiny_checkpoint(folder: Path, model_type: str = "phi3", seed: int = 0) -> Path:
    """Save a tiny random ``model_type`` model plus tokenizer into ``folder``; returns it."""
    import torch
    import transformers

    tok = train_tokenizer()
    vocab = tok.get_vocab_size()
    end, endoftext = tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=None, eos_token_id=endoftext, pad_token_id=endoftext)
    if model_type == "phi3":
        config = transformers.Phi3Config(**common)
    elif model_type == "qwen2":  # an architecture our torch engine lacks (the transformers engine's case)
        config = transformers.Qwen2Config(**common)
    elif model_type == "mistral":  # a sliding window short enough for tests to pass it
        config = transformers.MistralConfig(**common, sliding_window=8)
    else:
        config = transformers.LlamaConfig(**common)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = [endoftext, end]
    model.save_pretrained(folder, safe_serialization=True)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    fast.chat_template = PHI3_TEMPLATE
    fast.save_pretrained(folder)
    return folder


def reference_chat(folder: Path, question: str, max_new_tokens: int) -> tuple[list[int], str]:
    """transformers' own greedy answer: (prompt ids, answer text without the end token)."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    answer = out[0, len(ids):].tolist()
    ends = set(model.generation_config.eos_token_id)
    answer = answer[: next((i for i, t in enumerate(answer) if t in ends), len(answer))]
    return ids, tokenizer.decode(answer, skip_special_tokens=True)


def train_sentencepiece(folder: Path) -> Path:
    """A SentencePiece BPE model with byte fallback (Phi-3's and Llama 2's tokenizer kind) trained
    here on the corpus: ``folder/tokenizer.model``."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=320, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


LONGROPE_ORIGINAL = 64  # original_max_position_embeddings of the longrope checkpoint


def write_sp_checkpoint(folder: Path, model_type: str = "phi3", *, longrope: bool = False, seed: int = 0,
                        moe: bool = False, hidden_size: int = 64, train_steps: int = 0) -> Path:
    """A tiny random Phi-3 / PhiMoE / Llama checkpoint with a SentencePiece tokenizer, as the GGUF and
    ONNX converters expect a real one: ``tokenizer.model`` plus the fast ``tokenizer.json``, Phi-3's
    special tokens added after the SentencePiece pieces and the vocabulary padded like Phi-3's
    (32011 tokens in 32064 rows). No BOS, as the tokenizer's own post-processor does.
    ``hidden_size`` 256 lets llama.cpp's k-quants (256-wide blocks) apply to every matrix.
    ``train_steps``: fit the corpus briefly, so next-token choices have the margins of a trained model
    (a random model's top logits are near-ties that any 4-bit rounding reorders)."""
    import json
    import random

    import torch
    import transformers

    train_sentencepiece(folder)
    tokenizer = transformers.LlamaTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
    tokenizer.eos_token, tokenizer.pad_token = "<|endoftext|>", "<|endoftext|>"
    tokenizer.chat_template = PHI3_TEMPLATE
    end, endoftext = tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    vocab = (len(tokenizer) + 15) // 16 * 16
    common = dict(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                  num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=endoftext,
                  pad_token_id=endoftext, rms_norm_eps=1e-5, tie_word_embeddings=False)
    if longrope:
        rng = random.Random(seed)
        common["rope_parameters"] = {
            "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": LONGROPE_ORIGINAL,
            "short_factor": [rng.uniform(1, 2) for _ in range(hidden_size // 8)],
            "long_factor": [rng.uniform(2, 6) for _ in range(hidden_size // 8)]}
        common["original_max_position_embeddings"] = LONGROPE_ORIGINAL
    if moe:  # Phi-3.5-MoE's released config writes both mscales as 1.243
        common["rope_parameters"].update(short_mscale=1.243, long_mscale=1.243)
        config = transformers.PhimoeConfig(**common, num_local_experts=4, num_experts_per_tok=2,
                                           attention_bias=True, lm_head_bias=True)
    elif model_type == "phi3":
        config = transformers.Phi3Config(**common)
    else:
        config = transformers.LlamaConfig(**common)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # wider logits than the 0.02 init gives, so greedy choices are rarely near-ties
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.08)
    if train_steps:
        fit_corpus(model, tokenizer, train_steps)
    model.generation_config.eos_token_id = [endoftext, end]
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config.update(add_bos_token=False, add_eos_token=False)  # llama.cpp reads these; say them
    config_path.write_text(json.dumps(tokenizer_config, indent=2))
    return folder


def fit_corpus(model, tokenizer, steps: int) -> None:
    """A few Adam steps of next-token training on the corpus sentences (fp32, CPU, seconds)."""
    import torch

    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in sorted(set(CORPUS))]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


# -- What the conversion tests share (test_convert.py, test_openvino.py, test_mlx.py) -------------
# Greedy prompts; longrope ones start past original_max_position_embeddings (64), where
# transformers' per-length factor choice and the converted engines' agree (REFERENCE §7).
PROMPTS = ["What is 2 + 2?", "The capital of France is", "Hello! How can I", "Summarize the text",
           "Small language models run on"]
LONG_PROMPTS = [" ".join(CORPUS[i : i + 3]) for i in (0, 2, 4)]
FIRST_STEP_PROMPTS = [" ".join(CORPUS[i : i + 1 + i % 3]) for i in range(12)]
GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)


def write_checkpoint_set(root: Path) -> dict[str, Path]:
    """The checkpoints the conversion tests convert: Phi-3 plain and longrope, Llama, and a wider
    Phi-3 fitted briefly to the corpus (for quantized exports: k-quant blocks, trained margins)."""
    return {
        "phi3": write_sp_checkpoint(root / "phi3"),
        "phi3-longrope": write_sp_checkpoint(root / "phi3-longrope", longrope=True, seed=1),
        "llama": write_sp_checkpoint(root / "llama", "llama", seed=2),
        "phi3-wide": write_sp_checkpoint(root / "phi3-wide", seed=3, hidden_size=256, train_steps=30),
    }


def convert_once(store, checkpoints: dict[str, Path], name: str, to: str, precision: str):
    """``checkpoints[name]`` converted into ``store`` (once per store: later calls reuse it)."""
    from slmkit.store.convert import convert_into_store

    out = f"{name}-{to}-{precision}"
    if store.manifest(out) is None:
        convert_into_store(store, str(checkpoints[name]), to, precision)
    return store.resolve(out)


def open_llm(path: Path, **kwargs):
    from slmkit import LLM

    return LLM(str(path), max_sequences=4, context_length=256, **kwargs)


def broken_copy(checkpoint: Path, folder: Path) -> Path:
    """A copy of the checkpoint whose safetensors header is not JSON: converters and loaders fail on it."""
    folder.mkdir()
    for file in checkpoint.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    return folder


def first_step_agreement(reference, other, prompts) -> float:
    """How often ``other``'s first greedy token is ``reference``'s, on the reference's prompt ids."""
    hits = 0
    for prompt in prompts:
        ids = reference.encode_prompt(prompt)
        hits += reference.generate(ids, greedy(1)).token_ids == other.generate(ids, greedy(1)).token_ids
    return hits / len(prompts)


def check_quantized(reference, quantized, label: str) -> None:
    """A quantized conversion loads, generates, stops on the end token and keeps the fp32 reference's
    first top-1 token on most prompts (the rate is printed: `pytest -s`)."""
    out = quantized.generate("The capital of France is", greedy(12))
    assert len(out.token_ids) == 12 and out.finish_reason == "length"
    end = reference.tokenizer.token_id("<|end|>")
    assert end in quantized.tokenizer.special.end_of_generation
    stopped = quantized.chat([{"role": "user", "content": "Hi"}],
                             SamplingParams(max_tokens=8, temperature=0, logit_bias={end: 100.0}))
    assert stopped.token_ids == [end] and stopped.finish_reason == "stop" and stopped.text == ""
    rate = first_step_agreement(reference, quantized, FIRST_STEP_PROMPTS)
    print(f"\n{label}: first-step top-1 agrees with torch fp32 on {rate:.0%} of {len(FIRST_STEP_PROMPTS)} prompts")
    assert rate >= 0.5


def check_runner_seam(runner, reference, ids: list[int]):
    """A runner against the torch engine's (``reference``) beyond plain decoding: every position
    scored (all_logits), a rewind (truncate), a prefix copy and a step running both branches.
    Leaves sequence 0 holding ``ids[:7]`` and 1 holding ``ids[:8]``; returns the reference's
    logits of every position of ``ids``."""
    import numpy as np

    from slmkit.backends.base import Chunk

    every = runner.forward([Chunk(0, ids, 0, all_logits=True)])
    expected = reference.forward([Chunk(0, ids, 0, all_logits=True)])
    assert every.shape == expected.shape == (len(ids), runner.vocab_size)
    np.testing.assert_allclose(every, expected, atol=2e-4, rtol=1e-4)
    runner.truncate(0, 3)
    again = runner.forward([Chunk(0, ids[3:6], 3)])
    np.testing.assert_allclose(again[0], expected[5], atol=2e-4, rtol=1e-4)
    runner.copy_prefix(0, 1, 6)
    assert runner.sequence_length(1) == 6
    branch = runner.forward([Chunk(1, ids[6:8], 6), Chunk(0, ids[6:7], 6)])
    np.testing.assert_allclose(branch, expected[[7, 6]], atol=2e-4, rtol=1e-4)
    return expected


def check_batched_like_alone(llm, prompts: list[str]) -> None:
    """Continuous batching: the requests submitted to one engine at once give each one's greedy ids alone."""
    from engine_helpers import collect_tokens

    ids = [llm.encode_prompt(p) for p in prompts]
    params = greedy(10)
    alone = [llm.generate(p, params).token_ids for p in ids]
    assert collect_tokens(llm.runner, llm.tokenizer, ids, params) == alone
