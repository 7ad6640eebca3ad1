"""``response_format: json_object``: a logits processor that only lets through tokens keeping the
output a valid JSON object, driven by llama.cpp's own grammar engine (GBNF, as llama-server's
``json_object``). Once the object is complete only end-of-generation tokens remain possible."""

from __future__ import annotations

import ctypes
import llama_cpp
import numpy as np

from slmkit.errors import InvalidRequestError, ModelLoadError

# llama.cpp's grammars/json.gbnf, with an object at the root.
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class GrammarConstraint:
    """One sequence's grammar state, consulted by the `Sampler`.

    Checking the whole vocabulary against a grammar costs ~10 ms per token on a 49k vocabulary,
    so the sampler first picks as if unconstrained and asks `allows` about that one token; only
    when the grammar refuses it does it `mask` the row and pick again. For greedy this is the
    argmax of the constrained row; for a draw it is exactly the constrained distribution
    (llama.cpp's common sampler does the same).
    """

    def __init__(self, vocab, grammar: str = JSON_OBJECT_GBNF):
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self._sampler:
            raise ModelLoadError("llama.cpp could not build the JSON grammar for this model's vocabulary")
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._data: np.ndarray | None = None

    def allows(self, token: int) -> bool:
        self._one["id"], self._one["logit"] = token, 0.0
        self._apply(self._one)
        return bool(np.isfinite(self._one["logit"][0]))

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """Set the logits of every token the grammar refuses here to -inf (in place)."""
        n = logits.shape[0]
        if self._data is None or self._data.shape[0] != n:
            self._data = np.zeros(n, dtype=_TOKEN_DATA)
            self._data["id"] = np.arange(n, dtype=np.int32)
        self._data["logit"] = logits
        self._apply(self._data)
        logits[:] = self._data["logit"]
        return logits

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, int(token))

    def _apply(self, data: np.ndarray) -> None:
        array = llama_cpp.llama_token_data_array(
            data.ctypes.data_as(llama_cpp.llama_token_data_p), data.shape[0], -1, False)
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(array))

    def __del__(self) -> None:
        if getattr(self, "_sampler", None):
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None


def make_constraint(tokenizer, params) -> GrammarConstraint | None:
    """The constraint `params.response_format` asks for on this tokenizer's vocabulary, or None."""
    if params.response_format != "json_object":
        return None
    vocab = getattr(tokenizer, "vocab_handle", None)
    if vocab is None:
        raise InvalidRequestError("response_format json_object needs a llama.cpp model",
                                  param="response_format")
    return GrammarConstraint(vocab)
