"""Shared settings of the runtime tests: tiny models run single-threaded (the shared 2-core machine is busy)."""

import torch

torch.set_num_threads(1)  # tiny models gain nothing from threads
