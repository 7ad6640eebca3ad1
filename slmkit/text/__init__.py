"""Text at the edges of generation: chat templates, streaming detokenizer, stop strings."""

from slmkit.text.chat_template import BUILTIN_TEMPLATES, ChatTemplate, guess_builtin_template
from slmkit.text.detokenizer import IncrementalDetokenizer, detokenize_all
from slmkit.text.stop import StopMatcher

__all__ = [
    "BUILTIN_TEMPLATES",
    "ChatTemplate",
    "IncrementalDetokenizer",
    "StopMatcher",
    "detokenize_all",
    "guess_builtin_template",
]
