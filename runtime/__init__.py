"""Offloading runtime: experts in host memory, a device slot cache, predictor-driven prefetch, Least-Stale eviction.

Imports neither Lightning nor wandb (an inference server must not pull them in).
"""
