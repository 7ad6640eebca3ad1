"""Our own PyTorch implementations of the architectures slmkit runs natively.

One file per architecture (llama.py, phi3.py, phimoe.py), the pieces they share (rope.py,
layers.py, cache.py), a typed config read from Hugging Face's ``config.json`` (config.py), the
loaders (safetensors.py, gguf.py) and the registry from ``model_type`` to our classes.
torch is an optional dependency: nothing here is imported by the llama.cpp path.
"""
