"""Dense int ids for ExpertKeys: the table the cache's books (runtime/expert_cache.py) and an id-keyed eviction policy
share, and the int arrays indexed by those ids.

    table = KeyIds()                  # a policy with an id path makes one; the cache adopts it (or makes its own)
    table.ids[ExpertKey(0, 5)]        # -> id (1, 2, ...; the cache hands ids out at a key's first request; a
                                      # policy that knows keys in advance may number them before a cache adopts
                                      # its table, which sizes its arrays then: Belady's future)
    table.keys[id]                    # -> the ExpertKey (id 0 is no key: a list's sentinel)
    table.on_new = cache._fit_id      # called with each new id: a cache that adopted the table grows its arrays even
                                      # for keys its policy numbers itself (least-stale-predicted's forecasts)
    int_array(size, fill, typed)      # `size` ints: array.array("q") when `typed` (a compiled module reads it through
                                      # typed memoryviews), else a list (interpreted Python indexes a list faster)
    float_array(size, fill, typed)    # the same with C doubles (array.array("d")) when `typed`

ExpertKey stays the public API: keys become ids once per request, where the cache first sees them.
"""

from __future__ import annotations

from array import array


class KeyIds:
    """ExpertKey -> dense id (`ids`) and back (`keys`); ids start at 1, so 0 can mark "none" in an array."""

    __slots__ = ("ids", "keys", "on_new")

    def __init__(self) -> None:
        self.ids: dict = {}
        self.keys: list = [None]
        self.on_new = None  # called with each new id (the adopting cache's array growth), if set

    def __len__(self) -> int:
        return len(self.keys)

    def number(self, key) -> int:
        """`key`'s id, a new one if it has none (the cache does this for the keys it sees)."""
        n = self.ids.get(key)
        if n is None:
            n = self.ids[key] = len(self.keys)
            self.keys.append(key)
            if self.on_new is not None:
                self.on_new(n)
        return n


def filled(code: str, size: int, fill, typed: bool):
    """`size` entries equal to `fill`: an array.array of type `code` ("q" int64, "d" C double) when `typed`, else a
    list."""
    return array(code, [fill]) * size if typed else [fill] * size


def int_array(size: int, fill: int, typed: bool):
    """`size` ints equal to `fill`: an array.array of int64 when `typed`, else a list."""
    return filled("q", size, fill, typed)


def float_array(size: int, fill: float, typed: bool):
    """`size` floats equal to `fill`: an array.array of C doubles when `typed`, else a list."""
    return filled("d", size, fill, typed)


def grown(old, size: int, fill, typed: bool, code: str = "q"):
    """A new array of `size` entries (int64, or doubles with `code="d"`): `old`'s values, then `fill` (an exported
    buffer cannot be resized)."""
    rest = filled(code, size - len(old), fill, typed)
    if not typed:
        return list(old) + rest
    new = array(code)
    new.frombytes(memoryview(old).cast("B"))  # the old values as one buffer copy (not item by item)
    new.extend(rest)
    return new
