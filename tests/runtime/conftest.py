"""Shared settings of the runtime tests: tiny models run single-threaded (the shared 2-core machine is busy),
and `tiny_moe` (the tiny-model helpers next to this file) imports the same whether or not tests/ is a package."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # tiny models gain nothing from threads
sys.path.insert(0, str(Path(__file__).resolve().parent))
