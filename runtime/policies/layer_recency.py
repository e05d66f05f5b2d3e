"""The per-layer recency books that FLD (runtime/policies/fld.py) and Least-Stale (runtime/policies/least_stale.py)
share: per MoE layer an intrusive list of its residents' ids (runtime/key_ids.py), least recently used first, so a
policy that offers victims layer by layer in some sweep order finds each layer's oldest resident at its front.

    class MySweep(LayerRecencyEviction):
        batched = True                     # declared by each policy class itself (runtime/expert_cache.py)
        batched_ids = True                 # likewise the id-level batched path
        reverse = True                     # layers l-1, l-2, ..., l (FLD); False: 0, 1, ..., L-1
        stale_first = False                # Least-Stale: residents not used in this pass go first

`LayerIdLists` is the order itself (compiled with the cache by `pip install -e .`, runtime/compiled.py): the cache
asks it by id on the batched path (`victims_ids`, `on_group_ids`), the ExpertKey hooks convert a key once. Without
`num_layers` the books grow to the highest layer seen plus one (the sweep covers the layers seen so far).
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence

import cython

from runtime.key_ids import KeyIds, grown, int_array
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey

# what a walk over the residents takes: keys in a container, keys outside one, ids without the group's stamp
IN_CONTAINER = cython.declare(cython.int, 0)
OUTSIDE_CONTAINER = cython.declare(cython.int, 1)
UNSTAMPED = cython.declare(cython.int, 2)


@cython.cclass
class LayerIdLists:
    """Per layer a doubly linked list of ids, oldest first (`_head` / `_tail` per layer, 0 = none), the pass of each
    id's last use, and the sweep: `reverse` layers l-1, ..., 0, L-1, ..., l at current layer l, else 0, ..., L-1;
    `stale_first`: a first sweep over the residents last used before this pass (Least-Stale), then all."""

    typed = cython.declare(cython.bint, visibility="readonly")
    reverse = cython.declare(cython.bint, visibility="readonly")
    stale_first = cython.declare(cython.bint, visibility="readonly")
    layer = cython.declare(cython.Py_ssize_t, visibility="public")  # the current layer (on_layer_start)
    pass_id = cython.declare(cython.longlong, visibility="public")  # the current pass (on_pass_start)
    _ids = cython.declare(dict)
    _keys = cython.declare(list)
    _prev = cython.declare(cython.longlong[:])
    _next = cython.declare(cython.longlong[:])
    _layer_of = cython.declare(cython.longlong[:])
    _last_pass = cython.declare(cython.longlong[:])
    _head = cython.declare(cython.longlong[:])
    _tail = cython.declare(cython.longlong[:])
    _num_layers = cython.declare(cython.Py_ssize_t)  # layers with books (the sweep's L)
    _mark = cython.declare(cython.longlong[:])
    _gids = cython.declare(cython.longlong[:])
    _gmisses = cython.declare(cython.longlong[:])
    _gvictims = cython.declare(cython.longlong[:])

    def __init__(self, table: KeyIds, num_layers: int, reverse: bool, stale_first: bool) -> None:
        self.typed = cython.compiled
        self.reverse, self.stale_first = reverse, stale_first
        self._ids, self._keys = table.ids, table.keys
        self.layer = 0
        self.pass_id = 0
        self._prev, self._next, self._layer_of, self._last_pass = (int_array(1, 0, self.typed) for _ in range(4))
        self._head = int_array(max(num_layers, 1), 0, self.typed)
        self._tail = int_array(max(num_layers, 1), 0, self.typed)
        self._num_layers = num_layers

    def grow(self, capacity: int) -> None:
        if capacity > len(self._prev):
            self._prev = grown(self._prev, capacity, 0, self.typed)
            self._next = grown(self._next, capacity, 0, self.typed)
            self._layer_of = grown(self._layer_of, capacity, 0, self.typed)
            self._last_pass = grown(self._last_pass, capacity, 0, self.typed)

    def bind(self, mark, gids, gmisses, gvictims) -> None:
        self._mark, self._gids, self._gmisses, self._gvictims = mark, gids, gmisses, gvictims

    @property
    def num_layers(self) -> int:
        return self._num_layers

    @cython.locals(layer=cython.Py_ssize_t)
    def set_layer(self, layer: int) -> None:
        """The current layer (the policy's on_layer_start)."""
        self.layer = layer

    @cython.locals(layer=cython.Py_ssize_t)
    def add_layers(self, layer: int) -> None:
        """Books for every layer up to `layer` (a key of a layer new to them is about to join)."""
        if layer >= self._num_layers:
            if layer >= len(self._head):
                self._head = grown(self._head, 2 * layer + 2, 0, self.typed)
                self._tail = grown(self._tail, 2 * layer + 2, 0, self.typed)
            self._num_layers = layer + 1

    # one id ---------------------------------------------------------------------------------------------------
    @cython.cfunc
    @cython.locals(n=cython.longlong, p=cython.longlong, q=cython.longlong, layer=cython.longlong)
    @cython.returns(cython.void)
    def _unlink(self, n: int) -> None:
        p, q, layer = self._prev[n], self._next[n], self._layer_of[n]
        if p:
            self._next[p] = q
        else:
            self._head[layer] = q
        if q:
            self._prev[q] = p
        else:
            self._tail[layer] = p

    @cython.cfunc
    @cython.locals(n=cython.longlong, layer=cython.longlong, last=cython.longlong)
    @cython.returns(cython.void)
    def _append(self, n: int, layer: int) -> None:
        last = self._tail[layer]
        self._layer_of[n] = layer
        self._prev[n] = last
        self._next[n] = 0
        if last:
            self._next[last] = n
        else:
            self._head[layer] = n
        self._tail[layer] = n

    # ExpertKey hooks (the per-request path) -------------------------------------------------------------------
    @cython.locals(layer=cython.Py_ssize_t, n=cython.longlong)
    def insert(self, key: ExpertKey) -> None:
        layer = key[0]
        if layer >= self._num_layers:
            self.add_layers(layer)
        n = self._ids[key]
        self._append(n, layer)
        self._last_pass[n] = self.pass_id

    @cython.locals(n=cython.longlong)
    def touch(self, key: ExpertKey) -> None:
        """A use: `key` moves to the back of its layer and is current."""
        n = self._ids[key]
        if self._next[n]:
            self._unlink(n)
            self._append(n, self._layer_of[n])
        self._last_pass[n] = self.pass_id

    def remove(self, key: ExpertKey) -> None:
        self._unlink(self._ids[key])

    def is_stale(self, key: ExpertKey) -> bool:
        return self._last_pass[self._ids[key]] < self.pass_id

    @cython.locals(layer=cython.Py_ssize_t, n=cython.longlong)
    def layer_keys(self, layer: int) -> list[ExpertKey]:
        """`layer`'s residents, oldest first."""
        out = []
        n = self._head[layer] if layer < self._num_layers else 0
        while n:
            out.append(self._keys[n])
            n = self._next[n]
        return out

    def victim_in(self, candidates: Collection[ExpertKey]):
        """The first key of the sweep in `candidates`, or None."""
        found = self._walk(1, IN_CONTAINER, candidates, 0, 0)
        return self._keys[self._gvictims[0]] if found else None

    def victims_outside(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        """The sweep's first `count` keys not in `excluded`."""
        found = self._walk(count, OUTSIDE_CONTAINER, excluded, 0, 0)
        return [self._keys[self._gvictims[i]] for i in range(found)]

    # the id-level batched interface (the cache's request_group) -------------------------------------------------
    @cython.locals(count=cython.Py_ssize_t, stamp=cython.longlong, found=cython.Py_ssize_t)
    def victims_ids(self, count: int, stamp: int) -> int:
        """The sweep's first `count` ids not stamped `stamp` (the group's own) into the bound victims array. When the
        group's layer is new to the books, one by one its first miss's insert would add it (and so change the sweep)
        before the second victim: the same here."""
        if count > 1 and self.layer >= self._num_layers:
            found = self._walk(1, UNSTAMPED, None, stamp, 0)
            self.add_layers(self.layer)
            return found + self._walk(count - 1, UNSTAMPED, None, stamp, found)
        return self._walk(count, UNSTAMPED, None, stamp, 0)

    @cython.locals(
        num_keys=cython.Py_ssize_t,
        num_misses=cython.Py_ssize_t,
        num_victims=cython.Py_ssize_t,
        i=cython.Py_ssize_t,
        j=cython.Py_ssize_t,
        n=cython.longlong,
        layer=cython.Py_ssize_t,
        now=cython.longlong,
        p=cython.longlong,
        q=cython.longlong,
    )
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def on_group_ids(self, num_keys: int, num_misses: int, num_victims: int) -> None:
        """Victims leave; the group's hits leave their places; every key of the group joins its layer's back in
        request order, current (as one by one)."""
        # the arrays through `self`, not locals: compiled, a local memoryview costs two atomic updates of its
        # acquisition count, more than this loop's work on a decode group
        for i in range(num_victims):
            self._unlink(self._gvictims[i])
        layer = self._keys[self._gids[0]][0]  # a group is one layer's
        if layer >= self._num_layers:
            self.add_layers(layer)
        j = 0  # the next miss (misses are a subsequence of the group, and not linked)
        now = self.pass_id
        # the list operations written out (an interpreted call per id would cost more than the work): the hits
        # leave their places, then the group joins the layer's back in request order
        for i in range(num_keys):
            n = self._gids[i]
            if j < num_misses and self._gmisses[j] == n:
                j += 1
                continue
            p, q = self._prev[n], self._next[n]
            if p:
                self._next[p] = q
            else:
                self._head[layer] = q
            if q:
                self._prev[q] = p
            else:
                self._tail[layer] = p
        p = self._tail[layer]
        for i in range(num_keys):
            n = self._gids[i]
            self._layer_of[n] = layer
            self._last_pass[n] = now
            self._prev[n] = p
            if p:
                self._next[p] = n
            else:
                self._head[layer] = n
            p = n
        self._next[p] = 0
        self._tail[layer] = p

    # the sweep ------------------------------------------------------------------------------------------------
    @cython.locals(
        count=cython.Py_ssize_t,
        how=cython.int,
        stamp=cython.longlong,
        found=cython.Py_ssize_t,
        start=cython.Py_ssize_t,
        sweep=cython.int,
        i=cython.Py_ssize_t,
        k=cython.Py_ssize_t,
        layer=cython.Py_ssize_t,
        num_layers=cython.Py_ssize_t,
        n=cython.longlong,
        now=cython.longlong,
        taken=cython.bint,
    )
    @cython.cfunc
    @cython.returns(cython.Py_ssize_t)
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _walk(self, count: int, how: int, container, stamp: int, start: int) -> int:
        """Append up to `count` ids to the victims array after its first `start` (which it skips), in the sweep's
        order, taking an id by `how`; returns how many it appended."""
        found = 0
        num_layers = self._num_layers
        now = self.pass_id
        for sweep in range(2 if self.stale_first else 1):
            for i in range(num_layers):
                layer = (self.layer - 1 - i) % num_layers if self.reverse else i
                n = self._head[layer]
                while n:
                    if sweep == 0 and self.stale_first and self._last_pass[n] == now:
                        break  # recency order: the rest of this layer is current too
                    if how == UNSTAMPED:
                        taken = self._mark[n] != stamp
                    elif how == IN_CONTAINER:
                        taken = self._keys[n] in container
                    else:
                        taken = self._keys[n] not in container
                    if taken and (sweep or start):
                        for k in range(start + found):  # chosen already (by an earlier sweep or call)
                            if self._gvictims[k] == n:
                                taken = False
                                break
                    if taken:
                        self._gvictims[start + found] = n
                        found += 1
                        if found == count:
                            return found
                    n = self._next[n]
        return found


class LayerRecencyEviction(EvictionPolicy):
    """Base of the layer-sweep evictions: the current layer and each layer's residents by recency (`LayerIdLists`)."""

    reverse: bool = True
    stale_first: bool = False

    def __init__(self, num_layers: int | None = None) -> None:
        self.key_ids = KeyIds()  # the cache adopts this table: the ids `id_order` is asked about
        self._lists = self.id_order = LayerIdLists(self.key_ids, num_layers or 0, self.reverse, self.stale_first)
        if type(self).on_layer_start is LayerRecencyEviction.on_layer_start:  # a subclass's own hook stays
            self.on_layer_start = self._lists.set_layer  # bound once: the cache calls it per layer (one C call)

    @property
    def _layer(self) -> int:
        return self._lists.layer

    def on_layer_start(self, layer: int) -> None:
        self._lists.set_layer(layer)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._lists.insert(key)

    def on_evict(self, key: ExpertKey) -> None:
        self._lists.remove(key)

    def _touch(self, key: ExpertKey) -> None:
        self._lists.touch(key)

    on_access = _touch
    on_prefetch = _touch

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        key = self._lists.victim_in(candidates)
        if key is None:
            raise ValueError(f"{self.name}: no candidate is a resident it knows")
        return key

    def victims(self, count: int, excluded: Collection[ExpertKey]) -> list[ExpertKey]:
        lists = self._lists
        if count > 1 and lists.layer >= lists.num_layers:
            # the group's layer is new to the books: one by one, its first miss's insert would add it (and so
            # change the layer order) before the second victim is chosen
            first = lists.victims_outside(1, excluded)
            lists.add_layers(lists.layer)
            return first + lists.victims_outside(count - 1, set(excluded).union(first))
        return lists.victims_outside(count, excluded)

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        lists = self._lists
        for key in victims:
            lists.remove(key)
        for key in misses:
            lists.insert(key)
        for key in keys:
            lists.touch(key)
