"""Shared settings of the adapter tests: tiny models run single-threaded (they gain nothing from threads, and the
shared 2-core machine is busy: 8x slower with 2)."""

import torch

torch.set_num_threads(1)
