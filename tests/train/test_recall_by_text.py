"""examples/recall_by_text.py: recall of a bank on the validation split, on codec tables and on the other text."""

from __future__ import annotations

import pytest

from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import load_predictors, make_predictor, save_bank
from tests.project_scripts import load_script
from train.report import recall_rows


def table(out: str) -> dict[str, list[str]]:
    """{text part: its row's cells} of the script's one-bank table."""
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[1].strip(): [cell.strip() for cell in cells] for cells in rows[1:]}


def test_parts_split_the_sequences_and_all_is_the_reports_recall(tiny_harvest, tmp_path, capsys):
    model, harvest = tiny_harvest
    bank = save_bank(make_predictor("residual", adapter=get_adapter(model), horizon=2, rank=8), tmp_path / "bank")
    script = load_script("examples/recall_by_text.py")
    sequences = len(set(harvest.validation["sequence_id"]))
    assert script.main(["--harvest", str(harvest.path), "--banks", str(bank), "--min-hex", "0"]) == 0
    every = table(capsys.readouterr().out)  # every sequence has at least 0 "0x": all of them are codec tables
    assert every["codec tables"][2:] == every["all"][2:] and every["all"][2] == str(sequences)
    assert every["other text"][2:] == ["0", "none"]
    rows = recall_rows({"b": load_predictors(bank)}, harvest.validation, progress=False)
    expected = [row["b"] for row in rows if row["layer"] == "mean"]
    assert [float(v) for v in every["all"][3].split(" / ")] == pytest.approx(expected, abs=1e-4)
    assert script.main(["--harvest", str(harvest.path), "--banks", str(bank), "--min-hex", "100000"]) == 0
    none = table(capsys.readouterr().out)  # no sequence has that many: all of them are other text
    assert none["other text"][2:] == every["all"][2:] and none["codec tables"][2:] == ["0", "none"]
