"""Validation recall@K of predictor banks on two kinds of text apart: codec tables and the rest.

    python examples/recall_by_text.py --harvest outputs/harvests/<h> --banks outputs/banks/a outputs/banks/b

The embedded corpus's validation files include some of the standard library's codec modules (Lib/encodings/cp*.py):
tables of hex codes and Unicode names, near copies of one another, some of which land in the training files too.
They fill 45 of the default harvest's 80 validation sequences, so they weigh heavily on its mean recall. A
sequence counts as a codec table when its text holds at least --min-hex "0x" literals (256 tokens of ordinary code
have a few at most). Recall is the project's own (train/report.py recall_rows), mean over source layers.
"""

from __future__ import annotations

import argparse
import sys

from data_pipelines import load_harvest
from specmd_predict.predictors import load_predictors
from train.report import recall_rows


def load_tokenizer(manifest: dict):
    from specmd_predict.embedded import EMBEDDED_MODEL_NAME, load_embedded_model

    name = manifest["model"].get("name_or_path") or EMBEDDED_MODEL_NAME
    if name == EMBEDDED_MODEL_NAME:
        return load_embedded_model()[1]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, revision=manifest["model"].get("revision"))


def codec_sequences(split, tokenizer, min_hex: int) -> set[int]:
    """Ids of the split's sequences whose text holds at least `min_hex` "0x" literals."""
    columns = split.select_columns(["sequence_id", "token_id"]).to_pandas()
    return {
        int(sequence)
        for sequence, rows in columns.groupby("sequence_id")
        if tokenizer.decode(rows["token_id"].tolist()).count("0x") >= min_hex
    }


def mean_recall(banks: dict, split, hidden_layers) -> dict[str, list[float]]:
    """Per bank, recall@K at h = 1..H (mean over source layers) on `split`."""
    rows = recall_rows(banks, split, hidden_layers, progress=False)
    return {name: [row[name] for row in rows if row["layer"] == "mean"] for name in banks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--harvest", required=True, help="a finished harvest folder")
    parser.add_argument("--banks", nargs="+", required=True, help="predictor bank folders")
    parser.add_argument("--min-hex", type=int, default=12, help='"0x" literals that make a sequence a codec table')
    args = parser.parse_args(argv)
    harvest = load_harvest(args.harvest)
    split = harvest.validation
    hidden_layers = harvest.manifest.get("hidden_layers")
    banks = {path: load_predictors(path).eval() for path in args.banks}
    codec = codec_sequences(split, load_tokenizer(harvest.manifest), args.min_hex)
    sequences = split["sequence_id"]
    parts = {
        "all": list(range(len(split))),
        "codec tables": [i for i, s in enumerate(sequences) if s in codec],
        "other text": [i for i, s in enumerate(sequences) if s not in codec],
    }
    print(f"validation: {len(set(sequences))} sequences, {len(codec)} of them codec tables")
    print("| bank | text | sequences | recall@K h=1 / h=2 / ... |")
    print("|---|---|---|---|")
    for part, indices in parts.items():
        if not indices:
            print(f"| (any) | {part} | 0 | none |")
            continue
        count = len({sequences[i] for i in indices})
        for name, values in mean_recall(banks, split.select(indices), hidden_layers).items():
            print(f"| {name} | {part} | {count} | {' / '.join(f'{v:.4f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
