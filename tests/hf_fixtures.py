"""Tiny Hugging Face checkpoints written by transformers itself: random weights, a byte-level BPE
tokenizer trained here on a few sentences, a Phi-3 chat template and generation config."""

from __future__ import annotations

from pathlib import Path

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
