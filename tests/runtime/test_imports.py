"""The runtime pulls in neither Lightning nor wandb: not on import, not while offloading and generating.

Run: pytest tests/runtime/test_imports.py
A fresh interpreter imports `runtime`, offloads a tiny OLMoE with router reuse and generates; the forbidden
packages must be absent from sys.modules at both points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

FORBIDDEN = ("lightning", "pytorch_lightning", "lightning_fabric", "wandb")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import runtime
    after_import = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    from transformers import OlmoeConfig, OlmoeForCausalLM
    torch.manual_seed(0)
    config = OlmoeConfig(vocab_size=64, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_experts=8, num_experts_per_tok=2)
    model = runtime.offload(OlmoeForCausalLM(config).eval(), capacity=0.5)
    model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False, pad_token_id=0)
    str(runtime.offload_stats(model))
    after_offload = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(json.dumps({"after_import": after_import, "after_offload": after_offload}))
    """
)


def test_runtime_imports_neither_lightning_nor_wandb():
    code = f"FORBIDDEN = {FORBIDDEN!r}\n{SCRIPT}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"after_import": [], "after_offload": []}
