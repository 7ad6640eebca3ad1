"""slmkit: run, serve, compare and scale small language models behind one API."""

from slmkit.errors import SlmkitError
from slmkit.types import ImagePart, Message, RequestOutput, SamplingParams, TextPart, Usage

__version__ = "0.1.0"
__all__ = ["LLM", "Generator", "SamplingParams", "Message", "TextPart", "ImagePart", "RequestOutput", "Usage",
           "SlmkitError"]


def __getattr__(name: str):
    # LLM and Generator pull in llama.cpp; import them on first use so `import slmkit` stays light.
    if name == "LLM":
        from slmkit.llm import LLM

        return LLM
    if name == "Generator":
        from slmkit.engine.generator import Generator

        return Generator
    raise AttributeError(f"module 'slmkit' has no attribute {name!r}")
