"""Preparing `benchmarks/engines.py`'s models: SmolLM2 as a Hugging Face folder (transformers
reads the bundled GGUF), a random-weight model of Phi-3.5-mini's exact shape, and their
`slm convert` outputs in the benchmark's own store."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

WORK = Path.home() / ".cache" / "slmkit" / "bench-engines"
PHI35_PARAMETERS = 3.82e9
PHI35_MINI = dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=131072,
                  original_max_position_embeddings=4096, bos_token_id=1, eos_token_id=32000, pad_token_id=32000)


def smollm2_folder() -> Path:
    folder = WORK / "smollm2-hf"
    if (folder / "config.json").is_file():
        return folder
    import transformers

    from slmkit.store.bundled import locate_smollm2

    gguf = locate_smollm2()
    print("SmolLM2: transformers reads the bundled GGUF (gguf_file=) and saves a HF folder", flush=True)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-read model as quantized and refuses to save it; its weights are
    # plain dequantized fp32, so a fresh model of the same config takes them and saves.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def phi35_folder() -> Path:
    """Random weights of Phi-3.5-mini's shape, one safetensors shard per layer (bf16), plus the
    tiny test tokenizer padded into the real 32064-row vocabulary."""
    folder = WORK / "phi35-mini-random"
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    import torch
    import transformers
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from hf_fixtures import SPECIALS, train_sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 4096,
            "short_factor": [1.0 + i / 48 for i in range(48)], "long_factor": [1.0 + i / 4 for i in range(48)]}
    config = transformers.Phi3Config(**PHI35_MINI, rope_parameters=rope)
    config.architectures = ["Phi3ForCausalLM"]
    config.save_pretrained(folder)
    h, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=generator) * 0.02).to(torch.bfloat16)

    weight_map = {}
    shards = [("embed", {"model.embed_tokens.weight": rand(vocab, h)})]
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shards.append((f"layer{i}", {p + "self_attn.qkv_proj.weight": rand(3 * h, h), p + "self_attn.o_proj.weight": rand(h, h),
                                     p + "mlp.gate_up_proj.weight": rand(2 * inter, h), p + "mlp.down_proj.weight": rand(h, inter),
                                     p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                                     p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)}))
    shards.append(("head", {"model.norm.weight": torch.ones(h, dtype=torch.bfloat16), "lm_head.weight": rand(vocab, h)}))
    for n, (name, tensors) in enumerate(shards):
        file = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        weight_map.update({key: file for key in tensors})
        print(f"\rwriting random Phi-3.5-mini shards {n + 1}/{len(shards)}", end="", flush=True)
    print()
    tokenizer_dir = folder / "tok"
    train_sentencepiece(tokenizer_dir)
    tokenizer = transformers.LlamaTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
    tokenizer.save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes((tokenizer_dir / "tokenizer.model").read_bytes())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def meminfo(key: str) -> int:
    """One /proc/meminfo figure, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class SwapWatch:
    """Samples the machine's swap in use once a second: how far a converter's peak went past RAM."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    @staticmethod
    def used() -> int:
        return meminfo("SwapTotal") - meminfo("SwapFree")

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, self.used())

    def __enter__(self) -> "SwapWatch":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def convert_all(store, name: str, folder: Path, engines) -> dict[str, Path]:
    from slmkit.store.convert import convert_into_store

    paths = {}
    for label, fmt, precision, _backend, _dtype in engines:
        if fmt is None:
            paths[label] = folder
            continue
        out = f"{name}-{fmt}-{precision}"
        if store.manifest(out) is None:
            started = time.perf_counter()
            with SwapWatch() as swap:
                convert_into_store(store, str(folder), fmt, precision, name=out)
            print(f"converted {name} to {fmt} {precision} in {time.perf_counter() - started:.0f} s "
                  f"(peak swap used {swap.peak / 1e9:.1f} GB)", flush=True)
        paths[label] = store.resolve(out).path
    return paths
