"""`offload()`: run a Hugging Face MoE model with its experts in host memory and a small device cache.

    import runtime
    model = runtime.offload(model, predictors="outputs/banks/embedded-...", capacity=0.25)
    model.generate(input_ids, max_new_tokens=64)         # as usual
    print(runtime.offload_stats(model))                  # hits, misses, late prefetches, stall time per layer

Everything is checked (model family, predictor bank, capacity, expert layout) before any weight moves.
Then: every MoE layer's stacked expert tensors go to host memory (pinned when the device is CUDA), a pool
of `num_slots` device slots per tensor is allocated, everything else (attention, routers, shared experts,
embeddings) goes to the device, and the experts modules dispatch to the offload runner (dispatch.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from runtime.dispatch import (
    OFFLOAD_IMPLEMENTATION,
    RUNNER_ATTR,
    check_sparse_experts,
    inner_forward,
    install,
    is_offloaded,
)
from runtime.driver import resolve_capacity
from runtime.engine import OffloadEngine
from runtime.expert_cache import ExpertCache
from runtime.pass_start import install_pass_start
from runtime.policies import make_eviction, make_prefetch
from runtime.stats import OffloadStats
from runtime.store import HostExpertStore, SlotPool
from specmd_predict.adapters import get_adapter
from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.policies import EvictionPolicy, PrefetchPolicy

ENGINE_ATTR = "_specmd_offload_engine"
# The evictor the runtime benchmark measures best (docs/results/runtime.md): on CPU, embedded model, corpus
# prompts, router-reuse prefetch, capacities 5-25%, `fld` has the best or tied-best hit rate and CPU time per
# token on average (least-stale-reverse a close second; least-stale-predicted the slowest per token). The GPU
# sweep (`benchmarks/runtime.py --sweep --evictions ...`) has not been run: it is to confirm or change this.
DEFAULT_EVICTION = "fld"
ROUTER_REUSE_HORIZON = 3


def offload(
    model: nn.Module,
    predictors=None,
    capacity: int | float = 0.25,
    eviction: str | EvictionPolicy = DEFAULT_EVICTION,
    prefetch: str | PrefetchPolicy | None = None,
    device: str | torch.device | None = None,
    horizon: int | None = None,
    prefetch_budget: int | None = None,
) -> nn.Module:
    """Offload `model`'s routed experts; returns the same model object, ready for `generate`.

    predictors: None (router reuse: the later layers' own routers on the current hidden state), a predictor
        bank directory, or a loaded bank (`specmd_predict.predictors.load_predictors`).
    capacity: device bytes for cached experts (int), or a fraction of all routed experts' bytes (float in (0, 1]).
    eviction: a policy name from `runtime.policies.EVICTION_POLICIES`, or a policy object (default
        `DEFAULT_EVICTION`, the one the runtime benchmark measures best).
    prefetch: a name from `runtime.policies.PREFETCH_POLICIES` ("none" turns prefetching off), or a policy
        object; default "predictor" with a bank, "router-reuse" without.
    device: where compute and the slot cache live; default CUDA if available, else the model's device.
    horizon: how many layers ahead to prefetch, 1..(MoE layers - 1): router reuse applies that many later
        routers (default 1 for the "router-reuse" prefetch, else 3); with a bank, at most the bank's horizon
        (default: the bank's).
    prefetch_budget: at most this many prefetch copies per predicted layer, issued at each layer (default:
        top-k, one token's worth), so that prefetches queued on the copy stream do not hold up the next
        layer's demand copies (it binds in prefill, where many tokens propose many experts).
    Bad input (unknown names, out-of-range numbers, a bank for another model, a capacity below one layer's
    top-k) raises a ValueError before anything moves: the model is left untouched.
    """
    adapter = get_adapter(model)  # unsupported family or no MoE layer: clear error
    if is_offloaded(model):
        raise ValueError("this model is already offloaded; offload a fresh copy")
    check_sparse_experts(adapter)
    _check_options(adapter, predictors, prefetch, horizon, prefetch_budget)
    target = _resolve_device(model, device)
    if horizon is None and predictors is None and prefetch in (None, "router-reuse"):
        horizon = 1  # the router-reuse prefetch only looks one layer ahead: do not compute more
    predictor = _resolve_predictors(predictors, adapter, horizon)
    HostExpertStore.check_layout(adapter)
    expert_bytes = adapter.expert_bytes()
    num_slots = _num_slots(capacity, adapter, expert_bytes)
    eviction_name, evictor = _resolve_eviction(eviction, adapter)
    prefetch_name, prefetcher = _resolve_prefetch(prefetch, predictors is not None, predictor, adapter, horizon)
    if (
        prefetcher is not None
        and not isinstance(prefetch, PrefetchPolicy)
        and hasattr(prefetcher, "keep_probabilities")
    ):
        # ours (made by name): build the per-expert probability map, and run the next-use head, only for an
        # evictor that hears them
        prefetcher.keep_probabilities = type(evictor).on_predictions is not EvictionPolicy.on_predictions
        prefetcher.keep_next_use = type(evictor).on_next_use is not EvictionPolicy.on_next_use
    if prefetcher is None or isinstance(prefetch, PrefetchPolicy):
        predictor = None  # nothing of ours will call it
    if predictor is not None:
        _dry_run(predictor, adapter)
    inners = [inner_forward(adapter.experts(layer)) for layer in range(adapter.num_layers)]

    # nothing has moved so far; from here on the model is changed in place
    store = HostExpertStore.take(adapter, pin=target.type == "cuda")
    _move_rest(model, adapter, store, target)
    if predictor is not None and hasattr(predictor, "to"):
        predictor.to(target)
    pool = SlotPool(store, num_slots, target)
    cache = ExpertCache(num_slots, evictor, expert_bytes=expert_bytes, num_layers=adapter.num_layers)
    engine = OffloadEngine(adapter, store, pool, cache, prefetcher, eviction_name, prefetch_name, prefetch_budget)
    install(adapter, [engine.runner(layer, inner) for layer, inner in enumerate(inners)])
    install_pass_start(model, engine)  # a token-table bank: the next pass's layer 0 from its token (pass_start.py)
    adapter.watch_routing_inputs()  # token ids, earlier routers' states: what routers read besides the hidden state
    object.__setattr__(model, ENGINE_ATTR, engine)
    return model


def offload_stats(model: nn.Module) -> OffloadStats:
    """Counters of an offloaded model since `offload()` (or the last `reset_offload_stats`)."""
    return _engine(model).stats()


def reset_offload_stats(model: nn.Module) -> None:
    """Zero the counters (e.g. after a warm-up); the cache keeps its residents."""
    _engine(model).reset_stats()


def offload_engine(model: nn.Module) -> OffloadEngine:
    """The engine behind an offloaded model (its cache, pool, transfers), for inspection."""
    return _engine(model)


# ---- checks and choices (no weight moves here) ---------------------------------------------------------------
def _engine(model: nn.Module) -> OffloadEngine:
    engine = getattr(model, ENGINE_ATTR, None)
    if engine is None:
        raise ValueError("this model is not offloaded: call runtime.offload(model, ...) first")
    return engine


def _check_options(adapter: MoEAdapter, predictors, prefetch, horizon, prefetch_budget) -> None:
    """Range and consistency checks of offload()'s plain options: one clear ValueError each."""
    max_horizon = max(adapter.num_layers - 1, 1)
    if horizon is not None and (
        isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= max_horizon
    ):
        raise ValueError(
            f"horizon must be an int in 1..{max_horizon} (layers ahead; the model has {adapter.num_layers} MoE "
            f"layers), got {horizon!r}"
        )
    if prefetch_budget is not None and (
        isinstance(prefetch_budget, bool) or not isinstance(prefetch_budget, int) or prefetch_budget < 0
    ):
        raise ValueError(f"prefetch_budget must be an int >= 0 (prefetch copies per layer), got {prefetch_budget!r}")
    if prefetch == "predictor" and predictors is None:
        raise ValueError(
            "prefetch='predictor' needs a predictor bank: pass predictors=<bank directory>, or prefetch='router-reuse'"
        )
    if prefetch is not None and not isinstance(prefetch, str | PrefetchPolicy):
        raise TypeError(f"prefetch must be a policy name or a PrefetchPolicy, got {type(prefetch)}")


def _resolve_device(model: nn.Module, device) -> torch.device:
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return next(model.parameters()).device
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    return target


def _resolve_predictors(predictors, adapter: MoEAdapter, horizon: int | None):
    """None -> router reuse; a path -> the loaded bank; a bank -> itself. Checked against the model."""
    if predictors is None:
        if adapter.num_layers < 2:
            return None
        from specmd_predict.predictors.router_reuse import RouterReusePredictor

        return RouterReusePredictor(adapter, horizon=min(horizon or ROUTER_REUSE_HORIZON, adapter.num_layers - 1))
    if isinstance(predictors, str | Path):
        from specmd_predict.predictors import load_predictors

        predictors = load_predictors(predictors)
    check_model = getattr(predictors, "check_model", None)
    if check_model is None or not hasattr(predictors, "predict"):
        raise TypeError(f"predictors must be None, a bank directory or a loaded predictor, got {type(predictors)}")
    check_model(adapter)  # a bank for another model: clear ValueError
    return predictors


def _dry_run(predictor, adapter: MoEAdapter) -> None:
    """Score one all-zero token now, so a predictor that cannot serve this model fails before anything moves."""
    reference = next(adapter.router(0).parameters(), None)
    dtype, device = (reference.dtype, reference.device) if reference is not None else (torch.float32, "cpu")
    hidden_TD = torch.zeros(1, adapter.hidden_size, dtype=dtype, device=device)
    adapter.token_ids_T = torch.zeros(1, dtype=torch.long, device=device)  # its token, for hash-routed layers
    try:
        if getattr(predictor, "uses_routing", False):  # the routing-only kind scores from routing ids
            ids_TK = torch.arange(adapter.top_k, device=device).unsqueeze(0)
            probs_THE = predictor.predict_routing(0, ids_TK)
        else:
            probs_THE = predictor.predict(0, hidden_TD)
    except Exception as err:  # any failure here would otherwise surface mid-generation
        kind = getattr(predictor, "kind", type(predictor).__name__)
        raise ValueError(
            f"the {kind} predictor cannot score this {adapter.model_type} model ({type(err).__name__}: {err}); "
            "pass prefetch='none' or another predictor bank"
        ) from err
    finally:
        adapter.token_ids_T = None
    if probs_THE.shape[-1] != adapter.num_experts:
        raise ValueError(f"the predictor scores {probs_THE.shape[-1]} experts, the model has {adapter.num_experts}")


def _num_slots(capacity: int | float, adapter: MoEAdapter, expert_bytes: int) -> int:
    """Slots for `capacity` by the rule the simulator uses too (`runtime.driver.resolve_capacity`), and at least
    one token's top-k."""
    total = adapter.total_expert_bytes()
    if isinstance(capacity, bool) or not isinstance(capacity, int | float):
        raise TypeError(f"capacity must be bytes (int) or a fraction of expert bytes (float), got {capacity!r}")
    if isinstance(capacity, float) and not 0.0 < capacity <= 1.0:
        raise ValueError(f"a fractional capacity must be in (0, 1], got {capacity}")
    capacity_bytes = int(capacity * total) if isinstance(capacity, float) else capacity
    num_slots = resolve_capacity(capacity, expert_bytes, total)[0] if capacity_bytes >= expert_bytes else 0
    if num_slots < adapter.top_k:
        raise ValueError(
            f"capacity {capacity!r} ({capacity_bytes} bytes) holds {num_slots} experts of {expert_bytes} bytes, "
            f"fewer than the {adapter.top_k} (top-k) one token needs at one layer; need at least "
            f"{adapter.top_k * expert_bytes} bytes ({adapter.top_k * expert_bytes / total:.2%} of {total} expert bytes)"
        )
    return int(num_slots)


def _context(adapter: MoEAdapter) -> dict:
    return {"num_layers": adapter.num_layers, "num_experts": adapter.num_experts, "top_k": adapter.top_k}


def _resolve_eviction(eviction, adapter: MoEAdapter) -> tuple[str, EvictionPolicy]:
    if isinstance(eviction, EvictionPolicy):
        return getattr(eviction, "name", type(eviction).__name__), eviction
    return eviction, make_eviction(eviction, **_context(adapter))


def _resolve_prefetch(
    prefetch, have_bank: bool, predictor, adapter: MoEAdapter, horizon: int | None
) -> tuple[str, PrefetchPolicy | None]:
    if isinstance(prefetch, PrefetchPolicy):
        return getattr(prefetch, "name", type(prefetch).__name__), prefetch
    name = prefetch or ("predictor" if have_bank else "router-reuse")
    if name == "none":
        return name, None
    if predictor is None:  # a single MoE layer: nothing later to prefetch
        return "none", None
    ahead = predictor.horizon if horizon is None else min(horizon, predictor.horizon)
    options = {"layers_ahead": ahead} if name == "router-reuse" else {}
    policy = make_prefetch(name, predictor=predictor, adapter=adapter, horizon=ahead, **options, **_context(adapter))
    return name, policy


def _move_rest(model: nn.Module, adapter: MoEAdapter, store: HostExpertStore, device: torch.device) -> None:
    """Move every parameter and buffer except the stored expert tensors to `device`, keeping tied weights tied."""
    stored = {(id(adapter.experts(layer)), name) for layer in range(adapter.num_layers) for name in store.tensor_names}
    moved: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for slots, make in ((module._parameters, _moved_param), (module._buffers, _moved_buffer)):
            for name, tensor in list(slots.items()):
                if tensor is None or (id(module), name) in stored or tensor.device == device:
                    continue
                if id(tensor) not in moved:
                    moved[id(tensor)] = make(tensor, device)
                slots[name] = moved[id(tensor)]


def _moved_param(param: nn.Parameter, device: torch.device) -> nn.Parameter:
    return nn.Parameter(param.data.to(device), requires_grad=param.requires_grad)


def _moved_buffer(buffer: torch.Tensor, device: torch.device) -> torch.Tensor:
    return buffer.to(device)


__all__ = ["OFFLOAD_IMPLEMENTATION", "RUNNER_ATTR", "offload", "offload_engine", "offload_stats", "reset_offload_stats"]
