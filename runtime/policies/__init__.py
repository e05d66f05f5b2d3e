"""Eviction and prefetch policies, one per file, registered by name (used unchanged by eval/ and runtime/).

    from runtime.policies import make_eviction, make_prefetch, EVICTION_POLICIES, PREFETCH_POLICIES
    evictor = make_eviction("least-stale", num_layers=16)
    prefetcher = make_prefetch("router-reuse", predictor=RouterReusePredictor(adapter, horizon=1), top_k=8)

Callers may pass the shared context (`num_layers`, `num_experts`, `top_k`, ...; `EVICTION_CONTEXT`,
`PREFETCH_CONTEXT`) to any policy: a policy that does not take one drops it, so one call site serves every
policy. So are options of another policy of the same kind (one options dict serves a grid of policies).
Any other keyword is an error with a "did you mean" (`make_eviction("least-stale-predicted", treshold=0.9)`),
and numeric options are range-checked (`OPTION_RANGES`), one ValueError each. A wrong name fails with the
list of known names and a "did you mean".
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

from runtime.policies.belady import Belady
from runtime.policies.fifo import FIFO
from runtime.policies.fld import FLD
from runtime.policies.least_stale import LeastStaleLayerOrder, LeastStaleReverse
from runtime.policies.least_stale_predicted import LeastStalePredicted, LeastStalePredictedHeuristic
from runtime.policies.lfu import LFU
from runtime.policies.lru import LRU
from runtime.policies.prefetch_none import NoPrefetch
from runtime.policies.prefetch_predictor import PredictorPrefetch
from runtime.policies.prefetch_router_reuse import RouterReusePrefetch
from runtime.policies.prefetch_score_percentile import ScorePercentilePrefetch
from runtime.policies.score import ScoreBased
from specmd_predict.lookup import did_you_mean, lookup
from specmd_predict.policies import EvictionPolicy, PrefetchPolicy

# `least-stale` is the alias ../shared/DESIGN.md asks the simulator to settle: the literal reading evicts the stale
# experts of the layers just ahead, which this very pass needs next, and it loses to the reverse order in the README's
# expert-cache table (the `specmd-eval` run given there prints both, with Belady beside them).
LEAST_STALE_DEFAULT = LeastStaleReverse

EVICTION_POLICIES: dict[str, Callable[..., EvictionPolicy]] = {
    "lru": LRU,
    "lfu": LFU,
    "fifo": FIFO,
    "fld": FLD,
    "score": ScoreBased,
    "least-stale-layer-order": LeastStaleLayerOrder,
    "least-stale-reverse": LeastStaleReverse,
    "least-stale": LEAST_STALE_DEFAULT,
    "least-stale-predicted": LeastStalePredicted,
    "least-stale-predicted-heuristic": LeastStalePredictedHeuristic,  # ignores learned next-use tables
    "belady": Belady,
}

PREFETCH_POLICIES: dict[str, Callable[..., PrefetchPolicy]] = {
    "none": NoPrefetch,
    "router-reuse": RouterReusePrefetch,
    "score-percentile": ScorePercentilePrefetch,
    "predictor": PredictorPrefetch,
}


# Keywords callers pass to every policy of a kind (one call site serves them all): dropped where unused.
EVICTION_CONTEXT = frozenset({"num_layers", "num_experts", "top_k", "future"})
PREFETCH_CONTEXT = frozenset({"num_layers", "num_experts", "top_k", "predictor", "adapter", "horizon"})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# Numeric options: (test, what the test demands). None stays allowed where a policy takes it as "not given".
OPTION_RANGES: dict[str, tuple[Callable[[object], bool], str]] = {
    "num_layers": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "num_experts": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "top_k": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "horizon": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (layers ahead)"),
    "threshold": (lambda v: _is_real(v) and 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    "half_life": (lambda v: _is_real(v) and v > 0.0, "a number of passes > 0"),
    "min_frequency": (lambda v: _is_real(v) and 0.0 < v <= 1.0, "a frequency in (0, 1]"),
    "access_score": (lambda v: _is_real(v) and v >= 0.0, "a finite number >= 0"),
    "overfetch": (lambda v: _is_real(v) and v > 0.0, "a finite number > 0"),
    "percentile": (lambda v: _is_real(v) and 0.0 <= v < 100.0, "a number in [0, 100)"),
}


def _options(factory: Callable) -> set[str]:
    return {n for n, p in inspect.signature(factory).parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}


def _build(kind: str, registry: dict, context: frozenset, name: str, kwargs: dict):
    """Construct policy `name`: its own options are range-checked and passed; context keywords it does not take
    are dropped; options of another policy of the same kind are dropped too (a grid such as specmd-eval shares one
    options dict across its policies); any other keyword is an error with a "did you mean"."""
    factory = lookup(registry, name, f"{kind} policy")
    own = _options(factory)
    known = set(context).union(*(_options(f) for f in registry.values()))
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        word = unknown[0]
        hint = did_you_mean(word, own | set(context), known)
        takes = ", ".join(sorted(own)) or "no options"
        raise ValueError(f"{kind} policy {name!r} got an unknown option {word!r}.{hint} It takes: {takes}")
    passed = {k: v for k, v in kwargs.items() if k in own}
    for option, value in passed.items():
        check = OPTION_RANGES.get(option)
        if check is not None and value is not None and not check[0](value):
            raise ValueError(f"{kind} policy {name!r}: {option} must be {check[1]}, got {value!r}")
    return factory(**passed)


def make_eviction(name: str, **kwargs) -> EvictionPolicy:
    """A new eviction policy by registry name; see `_build` for which keywords are passed, dropped or refused."""
    return _build("eviction", EVICTION_POLICIES, EVICTION_CONTEXT, name, kwargs)


def make_prefetch(name: str, **kwargs) -> PrefetchPolicy:
    """A new prefetch policy by registry name; see `_build` for which keywords are passed, dropped or refused."""
    return _build("prefetch", PREFETCH_POLICIES, PREFETCH_CONTEXT, name, kwargs)
