"""llama.cpp's tensor names -> ours: the map each architecture builds for its GGUF weights.

Its own module so the architectures (llama.py, phi3.py, phimoe.py) need not import the GGUF
loader, which builds them through the registry.
"""

from __future__ import annotations

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def name_map(num_layers: int, per_layer: dict[str, str], kinds=("weight", "bias")) -> dict[str, str]:
    """llama.cpp tensor name -> our parameter name: the global tensors plus ``blk.N.<theirs>`` ->
    ``model.layers.N.<ours>`` for each kind (weight, bias)."""
    names = {f"{theirs}.{kind}": f"{ours}.{kind}" for theirs, ours in GLOBAL_NAMES.items() for kind in kinds}
    for i in range(num_layers):
        for theirs, ours in per_layer.items():
            for kind in kinds:
                names[f"blk.{i}.{theirs}.{kind}"] = f"model.layers.{i}.{ours}.{kind}"
    return names
