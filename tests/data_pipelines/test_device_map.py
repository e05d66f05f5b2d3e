"""A model split by accelerate (some layers in CPU memory, the rest offloaded to disk) harvests exactly what the
unsplit model harvests; a device map that does not fit is one line."""

from __future__ import annotations

import numpy as np

from data_pipelines import HarvestConfig, harvest, load_harvest
from data_pipelines.cli import main

SEQ_LEN = 32


def config(model_dir, corpus, output, **overrides) -> HarvestConfig:
    settings = dict(model=str(model_dir), dataset=str(corpus), seq_len=SEQ_LEN, max_tokens=SEQ_LEN * 12, batch_size=4,
                    device="cpu", output_dir=str(output), progress=False)  # fmt: skip
    return HarvestConfig(**(settings | overrides))


def test_offloaded_split_gives_the_unsplit_harvest(tiny_model_dir, text_corpus, tmp_path):
    model_dir = tiny_model_dir("olmoe")
    whole = load_harvest(harvest(config(model_dir, text_corpus, tmp_path / "whole")))
    # ~280 KB of float32 weights: 200 KB of CPU memory holds the embedding and layer 0, the rest goes to disk
    split_config = config(model_dir, text_corpus, tmp_path / "split", device_map="auto", max_memory={"cpu": "200KB"},
                          offload_folder=str(tmp_path / "offload"))  # fmt: skip
    split = load_harvest(harvest(split_config))
    placement = split.manifest["args"]["device_map"]
    assert {"cpu", "disk"} <= set(placement.values()), placement
    assert split.manifest["model"] == whole.manifest["model"]  # same router fingerprint, read from disk
    assert split.manifest["fingerprint"] == whole.manifest["fingerprint"]  # placement does not change content
    rows_whole, rows_split = (h.dataset.with_format("numpy")[:] for h in (whole, split))
    for name in rows_whole:
        assert np.array_equal(rows_whole[name], rows_split[name]), name


def test_device_map_that_does_not_fit_is_one_line(tiny_model_dir, text_corpus, tmp_path, capsys):
    args = ["--model", str(tiny_model_dir("olmoe")), "--dataset", str(text_corpus), "--seq-len", str(SEQ_LEN),
            "--max-tokens", str(SEQ_LEN * 4), "--device", "cpu", "--device-map", "auto", "--max-memory",
            '{"cpu": "10KB"}', "--output-dir", str(tmp_path / "out"), "--progress", "false"]  # fmt: skip
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("specmd-harvest")]
    assert len(err) == 1 and err[0].startswith("specmd-harvest: error: device map 'auto' (max_memory {'cpu': '10KB'})")
    assert "does not fit" in err[0] and not (tmp_path / "out").exists()
    no_map = [a for i, a in enumerate(args) if "--device-map" not in args[max(i - 1, 0) : i + 1]]
    assert main(no_map) == 2
    assert capsys.readouterr().err.strip() == (
        "specmd-harvest: error: max_memory needs a device_map (e.g. --device-map auto)"
    )
