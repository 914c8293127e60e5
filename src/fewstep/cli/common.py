"""Parsing helpers shared by the commands."""

from __future__ import annotations

import json
import math


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise SystemExit(f"error: steps must be comma-separated integers, got {text!r}") from e
    if not steps or min(steps) < 1:
        raise SystemExit(f"error: steps must be positive integers, got {text!r}")
    return steps


def jsonable(v: object) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def parse_pairs(text: str | None, what: str = "dataset=preset") -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):  # split on commas outside brackets: t_band=[0.05,0.95],aux_every=2
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    try:
        return tuple((k, v) for k, v in (p.split("=", 1) for p in parts))
    except ValueError:
        raise SystemExit(f"error: expected {what} pairs, got {text!r}") from None


def finite_json(obj: object) -> object:
    """``obj`` with every non-finite float replaced by None (valid JSON: no ``NaN`` / ``Infinity``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
