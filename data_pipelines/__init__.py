"""Harvest pipeline: run an MoE model over text and store, per token and MoE layer, router inputs and chosen experts.

    from data_pipelines import HarvestConfig, ensure_harvest, load_harvest
    path = ensure_harvest(HarvestConfig(max_tokens=50_000))   # reused when the same arguments ran before
    h = load_harvest(path)                                    # h.dataset, h.manifest, h.train, h.validation

Command line: `specmd-harvest --help` (data_pipelines/cli.py). Files: config.py (arguments), sources.py
(text -> token sequences), model.py (loading and early checks), recorder.py (one forward -> columns),
writer.py (Arrow shards in save_to_disk layout), pipeline.py (orchestration, atomic output, manifest),
load.py (reading a harvest back).
"""

from data_pipelines.config import HarvestConfig, HarvestError
from data_pipelines.load import Harvest, load_harvest
from data_pipelines.pipeline import ensure_harvest, harvest, is_finished

__all__ = ["Harvest", "HarvestConfig", "HarvestError", "ensure_harvest", "harvest", "is_finished", "load_harvest"]
