"""The predictor bank: a directory holding one trained predictor for one model, loadable without Lightning.

    save_bank(predictor, "outputs/banks/embedded-residual", extra={"metrics": ...})
    bank = load_predictors("outputs/banks/embedded-residual")     # an ExpertPredictor, in eval mode
    bank.check_model(adapter)                                      # ValueError for another model
    probs_THE = bank.predict(layer, hidden_TD)

Layout (FORMAT_VERSION 1):
    <bank>/config.json            {"format_version", "kind", "horizon", "identity": {model_type, num_layers,
                                   num_experts, top_k, hidden_size, router_fingerprint}, "hparams", "heads"
                                   (optional heads' hparams, e.g. {"next_pass": {"rank"}}), "created",
                                   "versions", "git_commit", "extra", "checksums": {file: "sha256:<hex>"}}
    <bank>/predictors.safetensors the predictor's state_dict
    <bank>/README.md              optional card (specmd-train writes one: did training help, gains over baselines)
A bank is written to a temporary sibling directory and renamed into place, so a half-written bank never
looks complete; its config records the weights' sha256 and every load checks it first, so a damaged bank
is refused, never used. Every failure to load is a `BankError` (a ValueError) with a one-line reason.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.io import ChecksumError, atomic_dir, folder_checksums, git_commit, verify_checksums, versions
from specmd_predict.predictors.base import ExpertPredictor
from specmd_predict.predictors.registry import PREDICTOR_KINDS, predictor_class

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "predictors.safetensors"
CARD_NAME = "README.md"


class BankError(ValueError):
    """A predictor bank is missing, incomplete, corrupted, or of an unsupported format."""


def save_bank(
    predictor: ExpertPredictor, path: str | os.PathLike, extra: dict | None = None, card: str | None = None
) -> Path:
    """Write `predictor` as a bank at `path` atomically (replacing an existing bank there); return the path.

    `card`: Markdown text for the bank's README.md (what it is, how well it does), when given.
    """
    if predictor.kind not in PREDICTOR_KINDS:
        raise BankError(f"a {predictor.kind!r} predictor cannot be saved in a bank (it needs the live model)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "kind": predictor.kind,
        "horizon": predictor.horizon,
        "identity": predictor.identity,
        "hparams": predictor.hparams(),
        "heads": predictor.head_hparams(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions("torch", "transformers", "safetensors"),
        "git_commit": git_commit(),
        "extra": extra or {},
    }
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in predictor.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt", "kind": predictor.kind})
        config["checksums"] = folder_checksums(tmp, [WEIGHTS_NAME])  # checked by every load
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if card is not None:
            (tmp / CARD_NAME).write_text(card)
    return path


def read_bank_config(path: str | os.PathLike) -> dict:
    """The bank's config.json, checked for format version and required fields."""
    path = Path(path)
    if not path.exists():
        raise BankError(f"no predictor bank at {path}")
    if not path.is_dir():
        raise BankError(f"{path} is not a predictor bank directory")
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise BankError(f"{path} is not a predictor bank (no {CONFIG_NAME}); was it written completely?")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BankError(f"corrupted predictor bank at {path}: {CONFIG_NAME} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or "format_version" not in config:
        raise BankError(f"corrupted predictor bank at {path}: {CONFIG_NAME} has no format_version")
    if config["format_version"] != FORMAT_VERSION:
        raise BankError(
            f"predictor bank at {path} has format version {config['format_version']!r}; "
            f"this specmd-predict reads version {FORMAT_VERSION}"
        )
    missing = [k for k in ("kind", "horizon", "identity", "hparams") if k not in config]
    if missing:
        raise BankError(f"corrupted predictor bank at {path}: {CONFIG_NAME} lacks {', '.join(missing)}")
    if not isinstance(config.get("checksums"), dict) or WEIGHTS_NAME not in config["checksums"]:
        raise BankError(
            f"predictor bank at {path} records no checksum of {WEIGHTS_NAME} (exported before checksums were "
            "recorded, or edited); export it again with specmd-train"
        )
    return config


def verify_bank(path: str | os.PathLike) -> dict:
    """The bank's config once its weights file matches the sha256 recorded at export; else a one-line BankError."""
    path = Path(path)
    config = read_bank_config(path)
    try:
        verify_checksums(path, config["checksums"], what="predictor bank")  # every file the export recorded
    except ChecksumError as err:
        raise BankError(str(err)) from None
    return config


def load_predictors(
    path: str | os.PathLike, adapter: MoEAdapter | None = None, device: str | torch.device = "cpu"
) -> ExpertPredictor:
    """Load the bank at `path` (no Lightning, no wandb); with `adapter`, also check it matches that model."""
    path = Path(path)
    config = verify_bank(path)
    weights_path = path / WEIGHTS_NAME
    try:
        cls = predictor_class(config["kind"])
        predictor = cls(config["identity"], config["horizon"], **config["hparams"])
        _attach_heads(predictor, config.get("heads") or {})
    except (TypeError, ValueError) as err:
        raise BankError(f"corrupted predictor bank at {path}: {err}") from None
    try:
        state = load_file(weights_path)
    except Exception as err:  # safetensors raises its own error types for truncated or garbled files
        raise BankError(f"corrupted predictor bank at {path}: cannot read {WEIGHTS_NAME} ({err})") from None
    expected = predictor.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise BankError(f"corrupted predictor bank at {path}: weights do not match its {CONFIG_NAME}")
    predictor.load_state_dict(state)
    predictor.bank_path = path
    predictor.bank_config = config
    if adapter is not None:
        predictor.check_model(adapter)
    return predictor.to(device).eval()


def _attach_heads(predictor: ExpertPredictor, heads: dict) -> None:
    """Rebuild the optional heads a bank's config lists, so its weights load into them."""
    from specmd_predict.predictors.next_pass import NextPassHead
    from specmd_predict.predictors.next_use import NextUseHead

    unknown = sorted(set(heads) - {"next_pass", "next_use"})
    if unknown:
        raise ValueError(f"unknown head(s) {', '.join(unknown)}")
    if "next_pass" in heads:
        predictor.attach_next_pass(NextPassHead(predictor.hidden_size, predictor.num_experts, **heads["next_pass"]))
    if "next_use" in heads:
        predictor.attach_next_use(
            NextUseHead(predictor.hidden_size, num_experts=predictor.num_experts, **heads["next_use"])
        )


def check_model(bank: ExpertPredictor, adapter: MoEAdapter) -> None:
    """Raise a clear ValueError when `bank` was made for another model than `adapter`'s."""
    bank.check_model(adapter)
