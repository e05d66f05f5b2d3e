"""The training configuration: one dataclass whose docstring is `specmd-train --help`.

    config = TrainConfig(kind="lowrank", rank=128)         # in Python
    specmd-train --config train/configs/default.yaml --kind lowrank --rank 128    # the same from the shell

Defaults train the default predictor on the embedded model's default harvest (train/configs/default.yaml
writes them out; a test keeps the two equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from data_pipelines.config import HarvestConfig
from specmd_predict.cli_options import check_at_least, check_between, option_name


@dataclass
class TrainConfig:
    """Train a bank of expert predictors on a harvest and export it (specmd-train).

    Args:
        harvest_path: A finished harvest directory (specmd-harvest's output). When null, the harvest described
            by `harvest` is reused if it exists, else made first.
        harvest: How to harvest when `harvest_path` is null (model, corpus, ...; see specmd-harvest --help).
        trace: A routing trace logged outside this project (.parquet, .jsonl, or a saved `datasets` folder; the
            schema and checks of `specmd-eval --trace`) to train on instead of a harvest. It has no hidden states,
            so only the routing kind trains on it (auto picks it); split by sequence id (the last 10% validate).
        num_experts: Experts per MoE layer of --trace, when the trace has no num_experts column.
        kind: Predictor kind: auto (residual where the model's routers rank experts by their linear logits, else
            lowrank; the choice is printed), residual (router-initialized residual MLP), lowrank, linear, shared, or
            routing (routing-only: from the experts chosen at l and the previous token's, no hidden states).
        horizon: Layers ahead each predictor covers (1..L-1): a predictor at layer l scores layers l+1..l+horizon;
            null: 3, clamped to L-1 with a notice on models with few MoE layers.
        next_pass: Also train a head predicting the next token's first MoE layer from the last MoE layer (stored in
            the bank; needs the last MoE layer's router input in the harvest).
        next_pass_rank: Hidden width of the next-pass head's correction MLP.
        next_use: Also train a head estimating, for every expert of every MoE layer, the layer-steps until its next
            use across passes (for least-stale-predicted; stored in the bank).
        next_use_rank: Hidden width of the next-use head.
        routing_previous: Routing kind only: also learn from the previous token's experts at l+h (false: from layer
            l's experts alone).
        rank: Hidden width of the MLP kinds (residual, lowrank, shared); ignored by linear. null (auto): the largest
            of 256, 128, 64, 32, 16, 8 whose bank (with its heads) costs at most 1% of an MoE layer's FLOPs per
            token, or 256 where no rank can (small models, whose routers alone exceed it; the line printed says so).
        depth: Hidden layers of the residual and lowrank kinds' MLP (each rank wide); 2 predicts better than 1 on
            the embedded model (docs/results/predictors.md) for rank x rank more FLOPs per source layer.
        dropout: Dropout inside the MLP kinds.
        train_router: Residual kind only: also fine-tune the copied router weights (else only the correction).
        loss: bce (multi-hot experts chosen at l+h) or kl (distill the true router distribution; needs a harvest
            with router logits).
        lr: AdamW learning rate.
        lr_schedule: cosine (to zero by step over max_epochs, or over max_time when a slow machine reaches it first;
            by step only under DDP) or constant.
        router_lr_scale: Residual kind: the copied router weights learn at lr * router_lr_scale.
        weight_decay: AdamW weight decay (of everything but the residual kind's copied router weights).
        label_smoothing: BCE loss: targets (1 - s) x the experts chosen + s x K / E.
        ema_decay: Validate, checkpoint and export an exponential moving average of the weights, updated every step
            with this decay (Lightning's EMAWeightAveraging); 0: the weights themselves.
        batch_size: Tokens per training step (each token gives all L source layers at once); under DDP the global
            batch, split evenly over the processes.
        max_epochs: Epochs of the planned run (the cosine's length); early stopping may end sooner.
        patience: Early stopping: validation checks without a better val/recall before stopping.
        max_time: Wall-clock cap on fitting, DD:HH:MM:SS (null: none).
        val_check_interval: Validate this often within an epoch (fraction of an epoch, or a number of batches).
        seed: Seed of everything (data order, init); runs repeat bit for bit unless --max_time led the
            learning-rate schedule (a slow machine; specmd-train says so).
        accelerator: Lightning accelerator: auto, cpu, gpu, ...
        devices: Lightning devices per node (with strategy ddp: processes per node; on CPU, gloo processes).
        strategy: Lightning strategy: auto (one device), ddp (one process per device, gradients all-reduced), ...
        num_nodes: Machines taking part (Lightning DDP; launch the same command on each, e.g. with srun or torchrun).
        precision: Lightning precision, e.g. 32-true, bf16-mixed.
        num_workers: DataLoader worker processes.
        cpu_threads: torch threads when training on CPU (predictors are tiny: more threads mostly add contention,
            badly so on a busy machine); 0 keeps torch's default.
        name: Run and bank name; null: <model>-<kind>.
        bank_dir: Where to export the bank; null: outputs/banks/<name>.
        output_dir: Where runs keep checkpoints, logs and the recall table (<output_dir>/<name>).
        resume: Continue an unfinished run of the same name and configuration from its last checkpoint (after a
            crash or kill); false (--resume false): start over. Any other earlier run in <output_dir>/<name> is
            moved aside to <name>.old-<UTC time>, so a run folder always holds one run.
        wandb: Log to Weights & Biases (offline unless WANDB_MODE or wandb_mode says otherwise); --no-wandb:
            a local CSV logger instead.
        wandb_project: W&B project name.
        wandb_mode: offline, online or disabled; null: $WANDB_MODE if set, else offline.
        progress: Show progress bars.
    """

    harvest_path: str | None = None
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    trace: str | None = None
    num_experts: int | None = None
    kind: str = "auto"
    horizon: int | None = None
    next_pass: bool = True
    next_pass_rank: int = 32
    next_use: bool = True
    next_use_rank: int = 32
    routing_previous: bool = True
    rank: int | None = None
    depth: int = 2
    dropout: float = 0.0
    train_router: bool = True
    loss: str = "bce"
    lr: float = 1e-2
    lr_schedule: str = "cosine"
    router_lr_scale: float = 0.1
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 2
    patience: int = 3
    max_time: str | None = "00:00:06:00"
    val_check_interval: float = 1.0
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    num_workers: int = 0
    cpu_threads: int = 1
    name: str | None = None
    bank_dir: str | None = None
    output_dir: str = "outputs/train"
    wandb: bool = True
    wandb_project: str = "specmd-predict"
    wandb_mode: str | None = None
    progress: bool = True
    resume: bool = True


MAX_TIME = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")  # what Lightning's Trainer(max_time=...) parses


def check_options(config: TrainConfig) -> None:
    """Every numeric option in its range, as one ValueError line (before anything is loaded or written)."""
    for name, minimum in (("batch_size", 1), ("rank", 1), ("depth", 1), ("next_pass_rank", 1), ("max_epochs", 1),
                          ("horizon", 1), ("patience", 0), ("num_nodes", 1), ("num_workers", 0), ("cpu_threads", 0),
                          ("num_experts", 1)):  # fmt: skip
        check_at_least(name, getattr(config, name), minimum)
    check_between("val_check_interval", config.val_check_interval, 0.0, float("inf"), low_open=True)
    for name in ("lr", "weight_decay", "router_lr_scale"):  # lr 0: a run that measures its starting point
        check_at_least(name, getattr(config, name), 0.0)
    devices = str(config.devices).strip()  # Lightning: a count, -1 (all), "auto", or a list of ids
    if devices.lstrip("-").isdigit() and int(devices) < 1 and int(devices) != -1:
        raise ValueError(f"--devices must be at least 1, -1 (all), auto, or a list of ids, got {config.devices!r}")
    for name in ("dropout", "label_smoothing", "ema_decay"):  # each in [0, 1)
        check_between(name, getattr(config, name), 0.0, 1.0)
        if getattr(config, name) == 1.0:
            raise ValueError(f"{option_name(name)} must be below 1, got 1.0")
    if config.max_time is not None and not MAX_TIME.match(str(config.max_time)):
        raise ValueError(f"--max-time must be DD:HH:MM:SS (e.g. 00:00:06:00) or null, got {config.max_time!r}")
