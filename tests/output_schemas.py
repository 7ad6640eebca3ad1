"""Structured-output schemas the route tests ask the weak test model for: small and bounded, so
a constrained answer always finishes."""

from __future__ import annotations

from typing import Literal

import pydantic

VERDICT = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                            "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
           "required": ["answer", "confidence"], "additionalProperties": False}


class Country(pydantic.BaseModel):
    """Bounded fields: the weak model cannot loop inside them (an unbounded integer it can)."""

    country: str = pydantic.Field(max_length=20)
    continent: Literal["Africa", "America", "Asia", "Europe", "Oceania"]
