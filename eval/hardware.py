"""Hardware cost model: copy time from bytes, compute time from FLOPs (or weight reads), per profile.

    profile = get_profile("h100-pcie")
    shape = get_shape("mixtral-8x7b")              # or ModelShape.from_config(config_dict_or_hf_config)
    profile.copy_time(shape.expert_bytes)          # seconds for one host-to-device expert copy
    profile.layer_time(shape, num_tokens=1, num_active_experts=2)

The simulator (`eval/simulate.py`) runs one copy engine (FIFO) beside compute: prefetch copies overlap
compute, a demand miss stalls until its copy lands, and a prefetch still in flight when demanded is "late".
A shape only supplies bytes and FLOPs; which experts are requested comes from the trace, so any model size
can be simulated on any harvest. Profile numbers are nominal achieved rates (peak x a typical efficiency),
not measurements: PCIe 4.0 x16 ~25 GB/s of its 32, PCIe 5.0 x16 ~50 of 64, NVLink-C2C ~400 of 450 per
direction; dense bf16 compute ~60% of peak; HBM/GDDR reads ~80% of peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from specmd_predict.lookup import lookup


@dataclass(frozen=True)
class HardwareProfile:
    """One accelerator behind one host link."""

    name: str
    h2d_bytes_per_s: float  # achieved host-to-device copy bandwidth
    flops_per_s: float  # achieved dense bf16 compute
    memory_bytes_per_s: float  # achieved device-memory read bandwidth (bounds small-batch decode)
    copy_latency_s: float = 10e-6  # fixed cost per copy (launch, DMA setup)
    description: str = ""

    def copy_time(self, num_bytes: int) -> float:
        return self.copy_latency_s + num_bytes / self.h2d_bytes_per_s

    def layer_time(self, shape: ModelShape, num_tokens: int, num_active_experts: int) -> float:
        """One MoE decoder layer over `num_tokens`: the slower of its FLOPs and its weight reads."""
        flops = num_tokens * (shape.dense_flops_per_token + shape.top_k * shape.expert_flops_per_token)
        weight_bytes = shape.dense_bytes + num_active_experts * shape.expert_bytes
        return max(flops / self.flops_per_s, weight_bytes / self.memory_bytes_per_s)

    def as_dict(self) -> dict:
        return asdict(self)


# Nominal achieved rates; the GPU behind a bare link profile is named in its description.
PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        HardwareProfile("pcie4-x16", 25e9, 0.6 * 312e12, 0.8 * 1.94e12, description="PCIe 4.0 x16, A100-class GPU"),
        HardwareProfile("pcie5-x16", 50e9, 0.6 * 756e12, 0.8 * 2.0e12, description="PCIe 5.0 x16, H100-class GPU"),
        HardwareProfile("a100-pcie", 25e9, 0.6 * 312e12, 0.8 * 1.94e12, description="A100 80GB PCIe (PCIe 4.0)"),
        HardwareProfile("h100-pcie", 50e9, 0.6 * 756e12, 0.8 * 2.0e12, description="H100 PCIe (PCIe 5.0)"),
        HardwareProfile(
            "gh200-c2c",
            400e9,
            0.6 * 989e12,
            0.8 * 4.0e12,
            copy_latency_s=5e-6,
            description="GH200: Hopper over NVLink-C2C from Grace memory",
        ),
        HardwareProfile("rtx4090", 25e9, 0.6 * 165e12, 0.8 * 1.0e12, description="RTX 4090 (PCIe 4.0 x16)"),
    )
}


def get_profile(name: str) -> HardwareProfile:
    return lookup(PROFILES, name, "hardware profile")


@dataclass(frozen=True)
class ModelShape:
    """The sizes the cost model needs, from a model config alone (no weights)."""

    name: str
    num_layers: int
    num_experts: int
    top_k: int
    hidden_size: int
    expert_intermediate: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int = 2
    shared_intermediate: int = 0  # always-on shared experts (dense per token)

    @property
    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.expert_intermediate  # gate, up, down

    @property
    def expert_bytes(self) -> int:
        return self.expert_params * self.dtype_bytes

    @property
    def expert_flops_per_token(self) -> int:
        return 2 * self.expert_params

    @property
    def dense_params(self) -> int:
        """Per-layer always-resident weights: attention, router, shared experts."""
        d, hd = self.hidden_size, self.head_dim
        attention = d * self.num_heads * hd * 2 + d * self.num_kv_heads * hd * 2
        return attention + d * self.num_experts + 3 * d * self.shared_intermediate

    @property
    def dense_bytes(self) -> int:
        return self.dense_params * self.dtype_bytes

    @property
    def dense_flops_per_token(self) -> int:
        return 2 * self.dense_params

    @property
    def total_expert_bytes(self) -> int:
        return self.num_layers * self.num_experts * self.expert_bytes

    @classmethod
    def from_config(cls, config, name: str | None = None, dtype_bytes: int = 2) -> ModelShape:
        """From a transformers config object or its dict (Mixtral, OLMoE, Qwen-MoE, DeepSeek-style keys)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        hidden = get("hidden_size")
        heads = get("num_attention_heads")
        num_experts = get("num_local_experts") or get("num_experts") or get("n_routed_experts")
        top_k = get("num_experts_per_tok") or get("top_k")
        intermediate = get("moe_intermediate_size") or get("intermediate_size")
        missing = [
            k
            for k, v in (
                ("hidden_size", hidden),
                ("num_attention_heads", heads),
                ("num_experts", num_experts),
                ("num_experts_per_tok", top_k),
                ("intermediate_size", intermediate),
            )
            if not v
        ]
        if missing:
            raise ValueError(f"config lacks what a MoE shape needs: {', '.join(missing)}")
        num_layers = get("num_hidden_layers")
        first_dense = get("first_k_dense_replace") or 0
        shared = (get("n_shared_experts") or 0) * intermediate + (get("shared_expert_intermediate_size") or 0)
        return cls(
            name=name or get("model_type") or "model",
            num_layers=num_layers - first_dense,
            num_experts=num_experts,
            top_k=top_k,
            hidden_size=hidden,
            expert_intermediate=intermediate,
            num_heads=heads,
            num_kv_heads=get("num_key_value_heads") or heads,
            head_dim=get("head_dim") or hidden // heads,
            dtype_bytes=dtype_bytes,
            shared_intermediate=shared,
        )


SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        # allenai/OLMoE-1B-7B-0924: 16 layers, 64 experts, top-8, d 2048, expert ffn 1024, 16 heads
        ModelShape("olmoe-1b-7b", 16, 64, 8, 2048, 1024, 16, 16, 128),
        # mistralai/Mixtral-8x7B-v0.1: 32 layers, 8 experts, top-2, d 4096, ffn 14336, 32 heads / 8 kv
        ModelShape("mixtral-8x7b", 32, 8, 2, 4096, 14336, 32, 8, 128),
        # the embedded tiny OLMoE of this repo: 8 layers, 32 experts, top-4, d 128, expert ffn 64, fp32
        ModelShape("embedded", 8, 32, 4, 128, 64, 4, 4, 32, dtype_bytes=4),
    )
}


def get_shape(name: str) -> ModelShape:
    return lookup(SHAPES, name, "model shape", note=" (or ModelShape.from_config)")
