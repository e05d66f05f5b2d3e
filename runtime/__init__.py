"""Offloading runtime: experts in host memory, a device slot cache, predictor-driven prefetch, Least-Stale eviction.

    import runtime
    model = runtime.offload(model, predictors=bank_dir_or_None, capacity=0.25)   # then generate as usual
    print(runtime.offload_stats(model))

Imports neither Lightning nor wandb (an inference server must not pull them in).
"""

from runtime.compiled import guard

guard()  # before anything imports a compiled module: a stale extension must not shadow its edited .py

from runtime.offload import offload, offload_engine, offload_stats, reset_offload_stats  # noqa: E402
from runtime.stats import LayerStats, OffloadStats  # noqa: E402

__all__ = ["LayerStats", "OffloadStats", "offload", "offload_engine", "offload_stats", "reset_offload_stats"]
