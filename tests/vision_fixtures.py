"""A tiny random Phi-3-vision checkpoint in the released layout, and small test images.

The text model is transformers' own `Phi3ForCausalLM` and the tower transformers' own
`CLIPVisionModel` (random, seeded), saved under the released names
(``model.vision_embed_tokens.img_processor.vision_model.*``); the projection and the separators
are random too. ``config.json`` carries ``img_processor.vision_config`` with the tower's size.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests.hf_fixtures import PHI3_TEMPLATE, train_tokenizer

# A tower with Phi-3-vision's geometry (336 px, 14 px patches -> 24x24, merged 12x12) but tiny width.
SMALL_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                   image_size=336, patch_size=14)
# The released reference code asserts a 1024-wide tower: the golden-value checkpoint keeps that width.
REFERENCE_TOWER = dict(hidden_size=1024, intermediate_size=128, num_hidden_layers=2, num_attention_heads=16,
                       image_size=336, patch_size=14)


def vision_config(vocab: int, end: int, endoftext: int, tower: dict) -> dict:
    return {
        "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v",
        "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_act": "silu",
        "max_position_embeddings": 8192, "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False, "sliding_window": 8192,
        "bos_token_id": None, "eos_token_id": endoftext, "pad_token_id": endoftext,
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
                       "use_hd_transform": True, "with_learnable_separator": True},
        "img_processor": {"image_dim_out": tower["hidden_size"], "model_name": "openai/clip-vit-large-patch14-336",
                          "name": "clip_vision_model", "num_img_tokens": 144, "vision_config": tower},
    }


def write_tiny_vision_checkpoint(folder: Path, *, tower: dict | None = None, seed: int = 0,
                                 num_crops: int = 4) -> Path:
    """Save the checkpoint, tokenizer and ``preprocessor_config.json`` into ``folder``; returns it."""
    import torch
    import transformers
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tower = dict(tower or SMALL_TOWER)
    tok = train_tokenizer()
    end, endoftext = tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")
    config = vision_config(tok.get_vocab_size(), end, endoftext, tower)
    torch.manual_seed(seed)
    text_config = {k: v for k, v in config.items() if k not in ("embd_layer", "img_processor", "architectures",
                                                                  "model_type")}
    text = transformers.Phi3ForCausalLM(transformers.Phi3Config(**text_config)).eval()
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(hidden_act="quick_gelu", **tower)).eval()
    state = {k: v for k, v in text.state_dict().items() if "rotary" not in k}
    prefix = "model.vision_embed_tokens."
    # transformers 5 dropped the `vision_model.` level of CLIPVisionModel; the released files (saved by
    # transformers 4) have it
    state.update({f"{prefix}img_processor.vision_model.{k}": v for k, v in clip.state_dict().items()
                  if "position_ids" not in k})
    merged, hidden = 4 * tower["hidden_size"], config["hidden_size"]
    gen = torch.Generator().manual_seed(seed + 1)
    state[prefix + "img_projection.0.weight"] = torch.randn(hidden, merged, generator=gen) * merged ** -0.5
    state[prefix + "img_projection.0.bias"] = torch.randn(hidden, generator=gen) * 0.1
    state[prefix + "img_projection.2.weight"] = torch.randn(hidden, hidden, generator=gen) * hidden ** -0.5
    state[prefix + "img_projection.2.bias"] = torch.randn(hidden, generator=gen) * 0.1
    state[prefix + "glb_GN"] = torch.randn(1, 1, merged, generator=gen)
    state[prefix + "sub_GN"] = torch.randn(1, 1, 1, merged, generator=gen)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [endoftext, end]}))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Phi3VImageProcessor", "num_crops": num_crops, "num_img_tokens": 144,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    fast.chat_template = PHI3_TEMPLATE
    fast.save_pretrained(folder)
    return folder


def write_text_half(vision_folder: Path, folder: Path) -> Path:
    """The same checkpoint's language model alone, as a plain ``phi3`` folder."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = load_file(str(vision_folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "vision_embed_tokens" not in k}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    config = json.loads((vision_folder / "config.json").read_text())
    for key in ("embd_layer", "img_processor"):
        config.pop(key)
    config.update(model_type="phi3", architectures=["Phi3ForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (vision_folder / name).exists():
            shutil.copy(vision_folder / name, folder / name)
    return folder


def gradient_image(width: int, height: int, seed: int = 0):
    """A deterministic RGB test image with structure in both directions (PIL)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, size=(height, width, 3))
    rgb = np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                    ((x + y) * 7 + seed * 50) % 256], axis=-1)
    return Image.fromarray(((rgb + noise) % 256).astype("uint8"), "RGB")


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
