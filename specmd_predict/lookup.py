"""Names looked up in a registry (policies, hardware profiles, model shapes), with a "did you mean" for a wrong one.

A wrong name is one ValueError that offers the closest known name and lists them all.

    factory = lookup(EVICTION_POLICIES, "lur", "eviction policy")
    # ValueError: unknown eviction policy 'lur'. Did you mean 'lru'? Known: belady, fifo, fld, ...
    hint = did_you_mean("treshold", own_options, all_options)   # " Did you mean 'threshold'?" or ""
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def did_you_mean(word: str, *choices: Iterable[str]) -> str:
    """` Did you mean 'x'?` with the name closest to `word` from the first of `choices` that has a close one
    (the likeliest names first), or "" when none is close."""
    for names in choices:
        close = difflib.get_close_matches(word, list(names), n=1)
        if close:
            return f" Did you mean {close[0]!r}?"
    return ""


def lookup(registry: Mapping[str, T], name: str, what: str, note: str = "") -> T:
    """`registry[name]`; an unknown name is a ValueError naming `what` was asked for, the closest known name and
    all of them (then `note`, e.g. another way to get one)."""
    if name in registry:
        return registry[name]
    known = ", ".join(sorted(registry))
    raise ValueError(f"unknown {what} {name!r}.{did_you_mean(name, registry)} Known: {known}{note}")
