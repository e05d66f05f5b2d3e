"""Benchmark: expert requests replayed per second by the simulator, per eviction policy, beside libCacheSim.

    python benchmarks/simulator.py                      # synthetic OLMoE-shaped trace, 25% capacity
    python benchmarks/simulator.py --harvest outputs/harvests/embedded-1a2b3c4d --capacity 0.05

The stream is a trace's demand requests (one pass after another, layers 0 -> L-1, the union of the pass's
tokens' experts per layer), without prefetching, measured two ways:
- `simulate()`: what the simulator really runs, `eval.simulate.simulate(trace, policy, capacity)` as a whole
  (the shared cache driver, `runtime/driver.py`, which hands a layer's requests to the cache in one batched call
  where the policy allows it; policy construction, e.g. Belady's index of the future, included);
- `request loop`: the bare per-request loop `cache.request(key)` through `runtime.expert_cache.ExpertCache`
  with the pass/layer clock (no pins, no driver): what this benchmark measured before the driver batched.
- `pure-Python floor`: LRU's dict and OrderedDict work with the driver's semantics, fused into one loop with no
  cache, policy or driver object (`fused_lru`), once with the trace's ExpertKeys and once with integer keys: not
  a simulator, the ceiling of any pure-Python one on this core (its hits equal `simulate()`'s LRU).
The `core` column says how simulate() ran: "compiled" when `pip install -e .` (or `python setup.py build_ext
--inplace`) compiled the books, the driver and that policy's modules (runtime/compiled.py: every policy today),
"books compiled" for a policy that would run interpreted over compiled books, "interpreted" in a tree that was
never built. Compiled and interpreted run the same .py files and count the same.
The rate counts requests per second of this thread's CPU time (`time.thread_time()`; best of --repeat runs; the
wall rate is shown too, as other processes may share the cores). One core: every loop measured here is
single-threaded, and the process's CPU time (`time.process_time()`, used before) also counted the idle spinning of
numerical libraries' helper threads (OpenBLAS, torch), which made the same run read up to ~30% slower at random.

If `libcachesim` (PyPI, compiled libCacheSim) is installed, the same flattened stream (key = layer * E + expert,
size 1, cache size = our slot count) is replayed through its LRU, FIFO and Belady twice: with its C loop over an
oracleGeneral trace file, and request by request from Python through its binding. Equal hit counts check that
both simulators implement the same policies; the rates show what the compiled core buys.
Writes outputs/benchmarks/simulator.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict
from itertools import islice
from pathlib import Path

# Run as a script, this folder leads sys.path, and benchmarks/runtime.py would shadow the runtime package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from eval.simulate import simulate  # noqa: E402
from eval.trace import Trace  # noqa: E402
from runtime.compiled import COMPILED_MODULES, compiled_modules  # noqa: E402
from runtime.expert_cache import ExpertCache  # noqa: E402
from runtime.policies import EVICTION_POLICIES, make_eviction  # noqa: E402
from specmd_predict.io import atomic_write_text  # noqa: E402


def replay(trace: Trace, policy_name: str, num_slots: int) -> tuple[float, float, ExpertCache]:
    """(thread cpu seconds, wall seconds, cache) of one replay of every pass through a fresh cache."""
    requests = trace.requests()
    policy = make_eviction(policy_name, num_layers=trace.num_layers, future=trace.flat_requests())
    cache = ExpertCache(num_slots, policy, num_layers=trace.num_layers)
    start_pass, start_layer, request = cache.start_pass, cache.start_layer, cache.request
    wall, cpu = time.perf_counter(), time.thread_time()
    for layers in requests:
        start_pass()
        for layer, keys in enumerate(layers):
            start_layer(layer)
            for key in keys:
                request(key)
    return time.thread_time() - cpu, time.perf_counter() - wall, cache


def replay_simulate(trace: Trace, policy_name: str, capacity: float) -> tuple[float, float, int]:
    """(thread cpu seconds, wall seconds, hits) of one `simulate()` call: the simulator's real path (the driver)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    result = simulate(trace, policy_name, "none", capacity)
    return time.thread_time() - cpu, time.perf_counter() - wall, result.stats.hits


def fused_lru(requests: list, num_slots: int) -> tuple[float, float, int]:
    """(thread cpu seconds, wall seconds, hits) of the pure-Python floor: LRU with the driver's semantics (a layer's
    residents are never its misses' victims) fused into one loop over `requests` (per pass, per layer, a tuple of
    keys), with no cache object, policy object, pins or counters beyond hits. Not a simulator: a measure of what
    the same dict and OrderedDict work costs with no abstraction at all, to read the other rates against (its hits
    must equal simulate()'s LRU)."""
    resident: dict = {}
    order: OrderedDict = OrderedDict()
    free = list(range(num_slots - 1, -1, -1))
    move_to_end = order.move_to_end
    hits = 0
    wall, cpu = time.perf_counter(), time.thread_time()
    for layers in requests:
        for keys in layers:
            misses = [key for key in keys if key not in resident]
            hits += len(keys) - len(misses)
            if misses:
                for key in keys:  # the layer's hits go newest first: never this layer's victims
                    if key in resident:
                        move_to_end(key)
                num_evict = len(misses) - len(free)
                if num_evict > 0:
                    victims = list(islice(order, num_evict))
                    slots = free[::-1] + [resident.pop(key) for key in victims]
                    free.clear()
                    for key in victims:
                        del order[key]
                else:
                    slots = [free.pop() for _ in misses]
                resident.update(zip(misses, slots, strict=True))
                order.update(dict.fromkeys(misses))
            for key in keys:
                move_to_end(key)
    return time.thread_time() - cpu, time.perf_counter() - wall, hits


def core_of(policy_name: str) -> str:
    """ "compiled" when the books, the driver and `policy_name`'s modules run compiled (`pip install -e .` builds
    them, runtime/compiled.py), "books compiled" when its policy runs interpreted, else "interpreted"."""
    policy_modules = {cls.__module__ for cls in type(make_eviction(policy_name, num_layers=1, future=[])).__mro__}
    listed = policy_modules.intersection(COMPILED_MODULES)
    done = set(compiled_modules())
    if not {"runtime.expert_cache", "runtime.driver"} <= done:
        return "interpreted"
    return "compiled" if listed and listed <= done else "books compiled"


def libcachesim_rates(trace: Trace, num_slots: int, repeat: int) -> list[dict]:
    """Same stream through libCacheSim (C loop over a trace file, and a Python loop), or [] if not installed."""
    try:
        import libcachesim as lcs
    except ImportError as err:
        print(f"libcachesim not importable ({err}); pip install libcachesim to compare", file=sys.stderr)
        return []
    ids = np.array([k.layer * trace.num_experts + k.expert for k in trace.flat_requests()], dtype=np.uint64)
    n = len(ids)
    # oracleGeneral records: u32 timestamp, u64 object id, u32 size, i64 next access (virtual time; -1 never)
    next_access = np.full(n, -1, dtype=np.int64)
    last_seen: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        obj = int(ids[i])
        next_access[i] = last_seen.get(obj, -1)
        last_seen[obj] = i
    records = np.zeros(n, dtype=[("ts", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
    records["ts"], records["id"], records["size"], records["next"] = np.arange(n), ids, 1, next_access
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stream.oracleGeneral")
        records.tofile(path)
        for name, cls in (("lru", lcs.LRU), ("fifo", lcs.FIFO), ("belady", lcs.Belady)):
            best_c = best_py = float("inf")
            hits_c = hits_py = 0
            for _ in range(repeat):
                reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
                cache = cls(num_slots)
                cpu = time.thread_time()
                miss_ratio, _ = cache.process_trace(reader)
                best_c = min(best_c, time.thread_time() - cpu)
                hits_c = round((1.0 - miss_ratio) * n)
                if name == "belady":
                    continue  # Belady needs next-access times, which the request-by-request loop lacks
                cache = cls(num_slots)
                req = lcs.Request()
                req.obj_size = 1
                get = cache.get
                hits = 0
                cpu = time.thread_time()
                for obj in ids.tolist():
                    req.obj_id = obj
                    hits += get(req)
                best_py = min(best_py, time.thread_time() - cpu)
                hits_py = hits
            rows.append(
                {
                    "simulator": "libCacheSim 0.3.5 (C loop)",
                    "policy": name,
                    "requests": n,
                    "rate": n / best_c,
                    "hits": hits_c,
                }
            )
            if name != "belady":
                rows.append(
                    {
                        "simulator": "libCacheSim (Python loop)",
                        "policy": name,
                        "requests": n,
                        "rate": n / best_py,
                        "hits": hits_py,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--harvest", type=Path, default=None, help="harvest dir (default: synthetic trace)")
    parser.add_argument("--capacity", type=float, default=0.25, help="fraction of all experts held (default 0.25)")
    parser.add_argument("--sequences", type=int, default=32, help="synthetic trace: sequences of 16+200 tokens")
    parser.add_argument("--repeat", type=int, default=3, help="runs per policy; the best is reported")
    parser.add_argument("--policies", nargs="*", default=list(EVICTION_POLICIES), help="eviction policies")
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmarks/simulator.json"))
    args = parser.parse_args(argv)

    if args.harvest is not None:
        from data_pipelines import load_harvest

        trace = Trace.from_harvest(load_harvest(args.harvest), split=None, with_hidden=False)
        source = str(args.harvest)
    else:
        trace = Trace.synthetic(
            num_sequences=args.sequences, prompt_tokens=16, decode_tokens=200, num_layers=16, num_experts=64, top_k=8
        )
        source = f"synthetic OLMoE-shaped: {args.sequences} sequences x (16 prompt + 200 decode), L16 E64 k8"
    trace.requests()  # build the interned key lists (and their int numbering) outside the timed loop, as a grid
    trace.request_ids()  # shares them across simulate() calls
    num_slots = max(1, int(args.capacity * trace.num_layers * trace.num_experts))
    num_requests = len(trace.flat_requests())

    rows = []
    for name in args.policies:
        runs = [replay_simulate(trace, name, args.capacity) for _ in range(args.repeat)]
        cpu, wall, hits = min(runs, key=lambda r: r[0])
        rows.append(
            {
                "simulator": "specmd simulate() (driver)",
                "core": core_of(name),
                "policy": name,
                "requests": num_requests,
                "rate": num_requests / cpu,
                "wall_rate": num_requests / wall,
                "hits": hits,
            }
        )
        runs = [replay(trace, name, num_slots) for _ in range(args.repeat)]
        cpu, wall, cache = min(runs, key=lambda r: r[0])
        rows.append(
            {
                "simulator": "specmd request loop",
                "policy": name,
                "requests": num_requests,
                "rate": num_requests / cpu,
                "wall_rate": num_requests / wall,
                "hits": cache.stats.hits,
            }
        )
    # the floor: the same LRU work fused in one loop, with the trace's ExpertKeys and with integer keys
    int_requests = [
        [tuple(key[0] * trace.num_experts + key[1] for key in keys) for keys in layers] for layers in trace.requests()
    ]
    for label, stream in (("ExpertKey keys", trace.requests()), ("int keys", int_requests)):
        runs = [fused_lru(stream, num_slots) for _ in range(args.repeat)]
        cpu, wall, hits = min(runs, key=lambda r: r[0])
        rows.append(
            {
                "simulator": f"pure-Python floor, {label}",
                "policy": "lru",
                "requests": num_requests,
                "rate": num_requests / cpu,
                "wall_rate": num_requests / wall,
                "hits": hits,
            }
        )
    rows.extend(libcachesim_rates(trace, num_slots, args.repeat))

    table = Table(title=f"Requests replayed per thread-CPU-second ({num_slots} slots = {args.capacity:.0%}; {source})")
    for column in ("simulator", "core", "policy", "requests/s", "wall req/s", "hit rate"):
        table.add_column(column, justify="left" if column in ("simulator", "core", "policy") else "right")
    for row in rows:
        wall = f"{row['wall_rate'] / 1e6:.2f} M" if "wall_rate" in row else ""
        table.add_row(
            row["simulator"],
            row.get("core", ""),
            row["policy"],
            f"{row['rate'] / 1e6:.2f} M",
            wall,
            f"{row['hits'] / num_requests:.4f}",
        )
    console = Console()
    (console if console.is_terminal else Console(width=120)).print(table)

    result = {
        "source": source,
        "num_requests": num_requests,
        "num_slots": num_slots,
        "capacity": args.capacity,
        "describe": trace.describe(),
        "rows": rows,
    }
    atomic_write_text(args.output, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
