"""One training run end to end: harvest (if needed) -> fit -> best checkpoint -> bank -> recall table.

    from train.config import TrainConfig
    from train.run import train_predictors
    result = train_predictors(TrainConfig(kind="residual", wandb=False))
    result.bank_path, result.rows      # the exported bank; recall@K rows (trained, router-reuse, frequency)

Writes under <output_dir>/<name>/: config.yaml, checkpoints/, logs (wandb/ or csv/), recall.csv and
recall.json; the bank goes to <bank_dir> (default outputs/banks/<name>) atomically.

Under DDP (`specmd-train --devices N --strategy ddp [--num-nodes M]`, Lightning launching the processes) every
rank trains on its own chunks of the harvest, validation recall is summed over the ranks (torchmetrics), and
rank 0 alone picks the checkpoint, computes the recall table and exports the bank.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from filelock import Timeout
from lightning.pytorch.callbacks import Callback

from specmd_predict.adapters import get_adapter
from specmd_predict.adapters.base import check_identity
from specmd_predict.io import atomic_write_text, move_aside, target_lock
from specmd_predict.lookup import did_you_mean
from specmd_predict.predictors import (
    FrequencyPredictor,
    RouterReusePredictor,
    check_horizon,
    make_predictor,
    predictor_class,
    save_bank,
)
from specmd_predict.predictors.cost import predictor_cost
from specmd_predict.predictors.next_pass import (
    NextPassHead,
    next_pass_baselines,
    next_pass_recall,
    next_pass_scorers,
    token_layer0_counts,
)
from specmd_predict.predictors.next_use import (
    MAX_PASSES,
    NextUseHead,
    compose_next_use,
    heuristic_next_use,
    next_use_quality,
)
from specmd_predict.predictors.residual import router_fits_residual
from train.config import TrainConfig, check_options
from train.data import HarvestDataModule, open_harvest
from train.export import bank_card, print_gain_table, recall_gains, training_verdict
from train.module import LOSSES, PredictorModule
from train.report import print_recall_table, recall_rows

TRAINABLE_KINDS = ("residual", "lowrank", "linear", "shared", "routing")
DEFAULT_HORIZON = 3  # layers ahead when --horizon is not given (clamped to L - 1)


@dataclass
class TrainResult:
    bank_path: Path
    run_dir: Path
    rows: list[dict]
    best_checkpoint: str | None


def train_predictors(config: TrainConfig, harvest=None, callbacks: Sequence = ()) -> TrainResult:
    """Train, export and report; raises ValueError / FileNotFoundError with a one-line reason on bad input.

    `harvest`: an already opened data_pipelines Harvest, used instead of `config.harvest_path` / `config.harvest`.
    `callbacks`: extra Lightning callbacks for the fit.
    """
    with ExitStack() as run_scope:  # holds the run folder's lock until the run ends
        return _train_predictors(config, harvest, callbacks, run_scope)


def _train_predictors(config: TrainConfig, harvest, callbacks: Sequence, run_scope: ExitStack) -> TrainResult:
    _check_config(config, harvest_given=harvest is not None)
    import lightning as L

    L.seed_everything(config.seed, workers=True, verbose=False)
    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    if config.trace:  # routing logged elsewhere: no model, no router inputs (train/trace_source.py)
        from train.trace_source import open_trace, trace_kind, trace_record

        harvest, identity = open_trace(config)
        adapter, shapes = None, SimpleNamespace(num_layers=identity["num_layers"])
        hidden_layers = list(range(identity["num_layers"]))  # every source layer (the routing kind reads ids)
        config = replace(config, kind=trace_kind(config.kind), horizon=resolve_horizon(config.horizon, shapes))
        name = config.name or f"{Path(config.trace).name.split('.')[0] or 'trace'}-{config.kind}"
    else:
        harvest = harvest if harvest is not None else open_harvest(config.harvest_path or _ensure_harvest(config))
        model = _load_model(harvest.manifest)
        adapter, identity = get_adapter(model), None  # the predictor takes the adapter's identity
        check_identity(harvest.manifest["model"], adapter.identity(), what="harvest")
        kept = harvest.manifest.get("hidden_layers")
        hidden_layers = list(range(adapter.num_layers) if kept is None else kept)
        if not hidden_layers:
            raise ValueError(
                f"the harvest {getattr(harvest, 'path', '')} kept no router inputs (hidden_layers []): predictors "
                "train on them; harvest again without --hidden-layers '[]'"
            )
        kind = resolve_kind(config.kind, adapter)
        config = replace(config, kind=kind, horizon=resolve_horizon(config.horizon, adapter))
        config = replace(config, rank=resolve_rank(config, adapter))
        name = config.name or f"{_model_short_name(harvest.manifest)}-{config.kind}"
    run_dir = Path(config.output_dir) / name

    predictor = make_predictor(
        config.kind, adapter=adapter, identity=identity, horizon=config.horizon, **_hparams(config)
    )
    datamodule = HarvestDataModule(
        harvest,
        config.horizon,
        config.batch_size,
        use_logits=config.loss == "kl",
        num_workers=config.num_workers,
        seed=config.seed,
        next_pass=config.next_pass,
        next_use=config.next_use and config.kind != "routing",  # the routing kind trains no next-use head
        previous=config.kind == "routing",
    )
    if datamodule.next_pass:
        predictor.attach_next_pass(_next_pass_head(adapter, harvest, config.next_pass_rank))
    elif config.next_pass:
        if adapter is None:
            print("next pass: not trained (a routing trace has no router inputs)")
        else:
            print("next pass: not trained (the harvest did not keep the last MoE layer's router input)")
    _check_trainer_options(config)
    if config.next_use and config.kind == "routing":
        print("next use: not trained for the routing-only kind (its table is composed with hidden-state predictions)")
    elif config.next_use:
        predictor.attach_next_use(
            NextUseHead(adapter.hidden_size, adapter.num_layers, adapter.num_experts, rank=config.next_use_rank)
        )
    # only now that the input is accepted does the run leave anything on disk
    resume_from = _prepare_run_dir(run_dir, config, run_scope)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(_config_dict(config), sort_keys=False))
    module = PredictorModule(
        predictor,
        hidden_layers,
        config.loss,
        config.lr,
        config.weight_decay,
        config.router_lr_scale,
        config.lr_schedule,
        config.label_smoothing,
    )
    logger = _make_logger(config, name, run_dir)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/recall",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # the latest state at every validation, what a rerun resumes from (Lightning's save_last only follows a
    # new best); it restores model, optimizer, schedule, early stopping, the best checkpoint and the data order
    latest = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False
    )
    stopping = L.pytorch.callbacks.EarlyStopping(monitor="val/recall", mode="max", patience=config.patience)
    trainer = L.Trainer(
        max_epochs=config.max_epochs,
        max_time=config.max_time,
        val_check_interval=config.val_check_interval,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=_strategy(config.strategy),
        num_nodes=config.num_nodes,
        precision=config.precision,
        deterministic=True,
        logger=logger,
        callbacks=[checkpoint, latest, stopping, DataOrderState(), *_averaging(config), *callbacks],
        default_root_dir=run_dir,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        log_every_n_steps=20,
        num_sanity_val_steps=0,
    )
    # the starting point is a candidate too: the residual kind starts at router reuse, and if training never
    # beats it on validation, the bank should be that start rather than something worse
    initial_recall = float(trainer.validate(module, datamodule, verbose=False)[0]["val/recall"])
    initial_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer.fit(module, datamodule, ckpt_path=resume_from)
    if _schedule_followed_the_clock(trainer):
        print(
            f"notice: the learning rate followed the --max_time budget ({config.max_time}): this machine was slower "
            "than the planned epochs, so a rerun will differ slightly; --max_time null repeats bit for bit"
        )
    best = checkpoint.best_model_path or None
    if trainer.world_size > 1:
        # DDP: rank 0 alone picks the checkpoint, reports and exports the bank, in one process: its metrics must
        # not wait for ranks that have left, so the process group ends here
        is_zero = trainer.is_global_zero
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if not is_zero:
            return TrainResult(Path(config.bank_dir or Path("outputs/banks") / name), run_dir, [], best)
    best_score = checkpoint.best_model_score
    best_recall = None if best_score is None else float(best_score)
    # a tie keeps the initialization: a bank that only equals its start must say so, not look trained
    if best and best_recall is not None and best_recall > initial_recall:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    else:
        module.load_state_dict(initial_state)
        best = "initial"
    verdict = training_verdict(initial_recall, best_recall, best == "initial", config.kind)
    predictor = module.predictor.cpu().eval()

    baselines = {} if adapter is None else {"router-reuse": RouterReusePredictor(adapter, config.horizon)}
    baselines["frequency"] = FrequencyPredictor.from_dataset(harvest.train, predictor.identity, config.horizon)
    rows = recall_rows(
        {f"trained ({config.kind})": predictor, **baselines},
        harvest.validation,
        hidden_layers,
        progress=config.progress,
    )
    gains = recall_gains(rows, f"trained ({config.kind})")
    cost = None if adapter is None else predictor_cost(predictor, adapter)  # FLOPs shares need the model's
    next_pass = None
    if predictor.predicts_next_pass:
        last_index = hidden_layers.index(adapter.num_layers - 1)
        scorers = next_pass_scorers(predictor) | next_pass_baselines(adapter, baselines["frequency"].frequency_LE[0])
        next_pass = next_pass_recall(scorers, harvest.validation, last_index, adapter.top_k)
        if "phase" in harvest.validation.column_names:  # a generate-mode harvest: the decode passes alone
            decode = next_pass_recall(scorers, harvest.validation, last_index, adapter.top_k, phase="decode")
            next_pass |= {f"{name} [decode]": value for name, value in decode.items()}
    next_use = None
    if predictor.predicts_next_use:
        next_use = next_use_report(predictor, baselines["frequency"], harvest.validation, hidden_layers)
    extra = {
        "train_config": _config_dict(config),
        **({"trace": trace_record(harvest)} if config.trace else {}),
        "harvest_path": None if config.trace else str(getattr(harvest, "path", config.harvest_path)),
        "best_checkpoint": best,
        "training": verdict,
        "validation_recall": rows,
        "recall_gains": gains,
        "next_pass_recall": next_pass,
        "cost": cost,
        "next_use_rank_correlation": next_use,
    }
    card_lines = []
    if cost is not None:
        card_lines += [
            f"Cost: {cost['mean_share']:.2%} of an MoE layer's FLOPs per token on average over source layers "
            f"(at most {cost['max_share']:.2%}; {cost['moe_layer_flops']:,} FLOPs per token per MoE layer; "
            f"{_cost_parts(cost)}). `specmd-eval` also counts it on OLMoE-1B-7B's and Mixtral-8x7B's shapes.",
            "",
        ]
    if config.trace:
        card_lines += [f"Trained on the routing trace {config.trace} ({predictor.identity['router_fingerprint']}).", ""]
    if next_pass is not None:
        card_lines += [
            f"Next token's first MoE layer (head from MoE layer {adapter.num_layers - 1}; `predict_next_pass`), "
            f"validation recall@{adapter.top_k}: {_named_values(next_pass)}.",
            "",
        ]
    if next_use is not None:
        card_lines += [
            "Next use (`predict_next_use`, layer-steps until each expert's next use), mean Spearman correlation "
            f"with the true next use on validation, over the experts used in the last {MAX_PASSES} passes: "
            f"learned {next_use['learned']:.4f}, least-stale-predicted's "
            f"heuristic {next_use['heuristic']:.4f}, frequency only {next_use['frequency']:.4f}.",
            "",
        ]
    card = bank_card(name, config.kind, verdict, gains, card_lines)
    bank_path = save_bank(predictor, config.bank_dir or Path("outputs/banks") / name, extra=extra, card=card)
    _write_rows(rows, run_dir)  # last: recall.json marks a finished run, which a rerun never resumes
    title = f"validation recall@{predictor.top_k}: {name}"
    decoder_indices = None if adapter is None else adapter.decoder_indices
    print_recall_table(rows, title=title, decoder_indices=decoder_indices)
    print_gain_table(gains, f"recall gain of the exported bank over the baselines: {name}", decoder_indices)
    print(verdict["message"])
    if next_pass is not None:
        print(
            f"next token's first MoE layer (from MoE layer {adapter.num_layers - 1}), validation recall@"
            f"{adapter.top_k}: {_named_values(next_pass)}"
        )
    if next_use is not None:
        print(
            f"next use, mean Spearman correlation with the true next use over the experts used in the last "
            f"{MAX_PASSES} passes (validation): " + ", ".join(f"{name} {value:.4f}" for name, value in next_use.items())
        )
    if cost is not None:
        print(
            f"cost: {cost['mean_share']:.2%} of an MoE layer's FLOPs per token (mean over source layers; max "
            f"{cost['max_share']:.2%}; {_cost_parts(cost)})"
        )
    print(f"bank: {bank_path}")
    _log_final(logger, rows, trainer.global_step)
    if config.wandb:
        _log_to_wandb(logger, rows, bank_path, name)
    return TrainResult(bank_path, run_dir, rows, best)


def _averaging(config: TrainConfig) -> list:
    """Lightning's EMA of the weights when --ema-decay > 0: it swaps the average in for every validation and for
    the checkpoints' state_dict (the raw weights ride along for resuming), and copies it in when fitting ends, so the
    best checkpoint, and the bank exported from it, hold the average."""
    if config.ema_decay <= 0:
        return []
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return [EMAWeightAveraging(decay=config.ema_decay)]


def _next_pass_head(adapter, harvest, rank: int) -> NextPassHead:
    """The next-pass head, with a token table counted on the training split when the harvest has token ids."""
    vocab_size = _vocab_size(adapter)
    if not vocab_size or "token_id" not in harvest.train.column_names:
        return NextPassHead.from_adapter(adapter, rank=rank)
    head = NextPassHead.from_adapter(adapter, rank=rank, vocab_size=vocab_size)
    head.set_token_table(token_layer0_counts(harvest.train, vocab_size, adapter.num_experts))
    return head


def _vocab_size(adapter) -> int:
    """The model's input vocabulary (its embedding rows), 0 when it has no token embedding to read."""
    embeddings = getattr(adapter.model, "get_input_embeddings", lambda: None)()
    return int(getattr(embeddings, "num_embeddings", 0) or 0)


def _cost_parts(cost: dict) -> str:
    names = {"predictor": "predictor", "next_use": "next-use head", "next_pass": "next-pass head"}
    return ", ".join(f"{names.get(part, part)} {share:.2%}" for part, share in cost["mean_share_by_part"].items())


def _named_values(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in values.items())


def next_use_report(predictor, frequency: FrequencyPredictor, split, hidden_layers: list[int]) -> dict[str, float]:
    """The learned next-use head against least-stale-predicted's heuristic (with this bank's probabilities) and
    against frequency alone, as mean Spearman correlation with the true next use."""
    freq_LE = frequency.frequency_LE

    def learned(layer, hidden_ND):
        probs_NHE = predictor.predict(layer, hidden_ND)
        return compose_next_use(layer, probs_NHE, predictor.next_use_log_passes(layer, hidden_ND))

    def heuristic(layer, hidden_ND):
        return heuristic_next_use(layer, predictor.predict(layer, hidden_ND), freq_LE)

    def frequency_only(layer, hidden_ND):
        return heuristic_next_use(layer, None, freq_LE, hidden_ND.shape[0])

    estimators = {"learned": learned, "heuristic": heuristic, "frequency": frequency_only}
    return next_use_quality(estimators, split, hidden_layers, predictor.num_experts)


def resolve_kind(kind: str, adapter) -> str:
    """The kind to train: `auto` becomes residual where the routers allow it, else lowrank (said in one line)."""
    reason = router_fits_residual(adapter) if kind in ("auto", "residual") else None
    if kind == "auto":
        chosen = "lowrank" if reason else "residual"
        why = f"not residual: {reason}" if reason else "the routers rank experts by their linear logits"
        print(f"kind auto: {chosen} ({why})")
        return chosen
    if kind == "residual" and reason:
        raise ValueError(f"the residual kind does not fit this model: {reason}; use --kind auto (lowrank here)")
    return kind


COST_BUDGET = 0.01  # the default bank's FLOPs per token, as a share of an MoE layer's (issue 11)
AUTO_RANKS = (256, 128, 64, 32, 16, 8)


def resolve_rank(config: TrainConfig, adapter) -> int:
    """An explicit rank as given; null: the largest of AUTO_RANKS whose bank (this kind, horizon and heads) costs at
    most COST_BUDGET of the model's MoE layer FLOPs per token (mean over source layers), else the largest rank, with
    one line saying which and why."""
    if config.rank is not None:
        return config.rank
    if "rank" not in inspect.signature(predictor_class(config.kind).__init__).parameters:
        return AUTO_RANKS[0]  # linear, routing: no rank to choose (the value is ignored)
    rank, message = choose_rank({rank: bank_share(config, adapter, rank) for rank in AUTO_RANKS})
    print(message)
    return rank


def choose_rank(shares: dict[int, float], budget: float | None = None) -> tuple[int, str]:
    """(rank, one line why) from each candidate rank's bank share: the largest within `budget` (COST_BUDGET), else
    the largest rank, since none can keep the budget on this model."""
    budget = COST_BUDGET if budget is None else budget
    fitting = [rank for rank, share in shares.items() if share <= budget]
    if fitting:
        rank = max(fitting)
        return rank, (
            f"rank auto: {rank} (its bank costs {shares[rank]:.2%} of an MoE layer's FLOPs per token, at most "
            f"{budget:.0%})"
        )
    rank, smallest = max(shares), min(shares)
    return rank, (
        f"rank auto: {rank} (no rank keeps this bank under {budget:.0%} of an MoE layer's FLOPs per token: even "
        f"rank {smallest} costs {shares[smallest]:.2%} on this model, so the rank that predicts best; rank {rank}: "
        f"{shares[rank]:.2%})"
    )


def default_bank(config: TrainConfig, identity: dict, rank: int):
    """The bank `config` trains for a model of `identity` with `rank`, on the meta device (for counting FLOPs)."""
    hidden, experts, layers = identity["hidden_size"], identity["num_experts"], identity["num_layers"]
    with torch.device("meta"):
        predictor = predictor_class(config.kind)(identity, config.horizon, **_hparams(replace(config, rank=rank)))
        if config.next_pass:
            predictor.attach_next_pass(NextPassHead(hidden, experts, config.next_pass_rank))
        if config.next_use and config.kind != "routing":
            predictor.attach_next_use(NextUseHead(hidden, layers, experts, config.next_use_rank))
    return predictor


def bank_share(config: TrainConfig, adapter, rank: int) -> float:
    """Mean share of an MoE layer's FLOPs per token of the bank this config trains with `rank` (built on the meta
    device, never run)."""
    return predictor_cost(default_bank(config, adapter.identity(), rank), adapter)["mean_share"]


def resolve_horizon(horizon: int | None, adapter) -> int:
    """An explicit horizon is checked as given; the default (None) is 3, clamped to L - 1 with a notice."""
    if horizon is not None:
        check_horizon(horizon, adapter.num_layers)
        return horizon
    check_horizon(1, adapter.num_layers)  # a model with one MoE layer has nothing to predict
    if adapter.num_layers - 1 < DEFAULT_HORIZON:
        print(
            f"horizon: {adapter.num_layers - 1} (the default {DEFAULT_HORIZON} clamped: the model has "
            f"{adapter.num_layers} MoE layers)"
        )
    return min(DEFAULT_HORIZON, adapter.num_layers - 1)


def _check_trainer_options(config: TrainConfig) -> None:
    """Accelerator, devices, strategy and nodes as Lightning will take them, checked before anything is written:
    a bad combination (no GPU, an unknown strategy, more processes than rows in a batch) is one line."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = L.Trainer(
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=_strategy(config.strategy),
            num_nodes=config.num_nodes,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        lines = str(err).strip().splitlines()
        raise ValueError(
            f"accelerator {config.accelerator!r}, devices {config.devices!r}, strategy {config.strategy!r}, "
            f"num_nodes {config.num_nodes}: {lines[0] if lines else type(err).__name__}"
        ) from err
    if trainer.world_size > 1 and config.batch_size < trainer.world_size:
        raise ValueError(f"batch_size {config.batch_size} is below the {trainer.world_size} processes it is split over")
    if trainer.world_size > 1 and config.num_workers > 0:
        raise ValueError("num_workers > 0 with several training processes is not supported; use num_workers 0")


def _strategy(name: str) -> str:
    """Lightning's strategy name; plain "ddp" looks for unused parameters: a bank holds predictors no batch
    trains (the last MoE layer predicts nothing, a next-pass head only rows with a next token), which plain
    DDP refuses."""
    return "ddp_find_unused_parameters_true" if name == "ddp" else name


def _schedule_followed_the_clock(trainer) -> bool:
    """Whether the cosine schedule (train.module.cosine_to_budget) was led by wall-clock time at some step."""
    return any(
        getattr(fn, "clock_led", False)
        for config in trainer.lr_scheduler_configs
        for fn in getattr(config.scheduler, "lr_lambdas", ())
    )


def _check_config(config: TrainConfig, harvest_given: bool = False) -> None:
    check_options(config)
    if config.kind not in ("auto", *TRAINABLE_KINDS):
        kinds = ("auto", *TRAINABLE_KINDS)
        hint = did_you_mean(config.kind, kinds)
        raise ValueError(f"kind {config.kind!r} cannot be trained.{hint} Choose one of {', '.join(kinds)}")
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.trace is not None and (config.harvest_path is not None or harvest_given):
        raise ValueError("give either --harvest-path or --trace, not both")
    harvest_path = config.harvest_path
    if not harvest_given and harvest_path is not None and not Path(harvest_path, "manifest.json").is_file():
        raise FileNotFoundError(f"no harvest at {config.harvest_path} (no manifest.json); run specmd-harvest first")


def _ensure_harvest(config: TrainConfig) -> Path:
    from data_pipelines import ensure_harvest

    harvest_config = config.harvest
    if config.loss == "kl" and not harvest_config.keep_router_logits:
        harvest_config = replace(harvest_config, keep_router_logits=True)
    return ensure_harvest(harvest_config)


def _load_model(manifest: dict):
    """The harvested model, for its routers (router reuse, the residual kind's init)."""
    from specmd_predict.embedded import EMBEDDED_MODEL_DIR, EMBEDDED_MODEL_NAME, load_embedded_model

    info = manifest["model"]
    name = info.get("name_or_path") or EMBEDDED_MODEL_NAME
    if name == EMBEDDED_MODEL_NAME or Path(name).resolve() == EMBEDDED_MODEL_DIR:
        return load_embedded_model()[0]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        name, revision=info.get("revision"), dtype=torch.float32, trust_remote_code=False
    ).eval()


def _model_short_name(manifest: dict) -> str:
    from specmd_predict.embedded import EMBEDDED_MODEL_DIR, EMBEDDED_MODEL_NAME

    name = str(manifest["model"].get("name_or_path") or EMBEDDED_MODEL_NAME)
    if name == EMBEDDED_MODEL_NAME or Path(name).resolve() == EMBEDDED_MODEL_DIR:
        return EMBEDDED_MODEL_NAME
    return Path(name.rstrip("/")).name.replace("/", "-") or "model"


def _hparams(config: TrainConfig) -> dict:
    """The kind's constructor arguments taken from the config (linear has none, only residual trains routers)."""
    accepted = inspect.signature(predictor_class(config.kind).__init__).parameters
    candidates = {"rank": config.rank, "depth": config.depth, "dropout": config.dropout}
    candidates["train_router"] = config.train_router
    candidates["use_previous"] = config.routing_previous  # routing kind: learn from the previous token too
    return {k: v for k, v in candidates.items() if k in accepted}


def _config_dict(config: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(config), default=str))


def _make_logger(config: TrainConfig, name: str, run_dir: Path):
    from lightning.pytorch.loggers import CSVLogger

    if not config.wandb:
        return CSVLogger(run_dir, name="csv", version="")
    from lightning.pytorch.loggers import WandbLogger

    # never block on the network: offline unless the user asked otherwise
    mode = config.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    if os.environ["WANDB_SILENT"] == "true":  # also W&B's own warnings, e.g. on the `anonymous` setting Lightning
        import wandb  # passes: they are printed while settings are checked, before W&B applies `silent`

        wandb.termsetup(wandb.Settings(silent=True), None)
    logger = WandbLogger(
        project=config.wandb_project, name=name, save_dir=str(run_dir), mode=mode, config=_config_dict(config)
    )
    return logger


# options that may change between a run and its resumption (how long or how fast, not what is trained)
RESUMABLE_CHANGES = ("resume", "progress", "max_epochs", "max_time", "num_workers", "cpu_threads", "wandb_mode")
FINISHED_MARK = "recall.json"  # written last


def _prepare_run_dir(run_dir: Path, config: TrainConfig, run_scope: ExitStack) -> str | None:
    """Lock the run folder; return the checkpoint to resume from, or None after moving an earlier run aside.

    Resumed: an unfinished run (no recall.json) with the same configuration and a last.ckpt, unless
    --resume false. Anything else already in the folder is moved aside whole: one folder, one run.
    Under torchrun or Lightning's DDP launcher only rank 0 locks and moves; every rank sees the same files.
    """
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if rank == 0:
        try:
            run_scope.enter_context(target_lock(run_dir, timeout=0))
        except Timeout:
            raise ValueError(
                f"another specmd-train is writing {run_dir}; wait for it or choose another --name"
            ) from None
    last = run_dir / "checkpoints" / "last.ckpt"
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        return None
    if config.resume and last.is_file() and not (run_dir / FINISHED_MARK).exists():
        earlier = _read_yaml(run_dir / "config.yaml")
        now = _config_dict(config)
        if {k: v for k, v in earlier.items() if k not in RESUMABLE_CHANGES} == {
            k: v for k, v in now.items() if k not in RESUMABLE_CHANGES
        }:
            print(f"resuming {run_dir} from {last} (--resume false starts over)")
            log = run_dir / "csv" / "metrics.csv"  # Lightning's CSVLogger would delete the logs before the crash
            if log.is_file():
                os.replace(log, log.with_name(f"metrics.until-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.csv"))
            return str(last)
    if rank == 0:
        print(f"moved the earlier run in {run_dir} aside to {move_aside(run_dir)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


class DataOrderState(Callback):
    """Keeps the training batches' shuffle generator in every checkpoint, so that a resumed run draws the same
    data order as an uninterrupted one (Lightning restores model, optimizer, schedule and callbacks, not this).

    Under DDP this is the chunk-order generator every rank shares; each rank's own row generator is not saved
    (rank 0 writes the checkpoint), so a resumed DDP run shuffles rows within a buffer differently."""

    def __init__(self) -> None:
        self._trainer = None
        self._pending = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def _generator(self):
        loader = getattr(self._trainer, "train_dataloader", None) if self._trainer is not None else None
        return getattr(getattr(loader, "dataset", None), "generator", None)

    def state_dict(self) -> dict:
        generator = self._generator()
        return {} if generator is None else {"generator": generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict.get("generator")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        generator = self._generator()
        if self._pending is not None and generator is not None:
            generator.set_state(self._pending)
        self._pending = None


def _write_rows(rows: list[dict], run_dir: Path) -> None:
    for suffix, text in (("json", json.dumps(rows, indent=2) + "\n"), ("csv", _csv(rows))):
        atomic_write_text(run_dir / f"recall.{suffix}", text)


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _log_final(logger, rows: list[dict], step: int) -> None:
    """The final validation recall of every predictor, per (layer, horizon) and averaged, in any logger."""
    names = [k for k in rows[0] if k not in ("layer", "horizon")]
    metrics = {f"final/{n.split(' ')[0]}/recall_l{r['layer']}_h{r['horizon']}": r[n] for r in rows for n in names}
    logger.log_metrics(metrics, step=step)
    logger.save()


def _log_to_wandb(logger, rows: list[dict], bank_path: Path, name: str) -> None:
    import wandb

    run = logger.experiment
    names = [k for k in rows[0] if k not in ("layer", "horizon")]
    table = wandb.Table(
        columns=["horizon", "layer", *names],
        data=[[r["horizon"], str(r["layer"])] + [r[n] for n in names] for r in rows],
    )
    run.log({"final/recall_table": table})
    for row in rows:
        if row["layer"] == "mean":
            for n in names:
                run.summary[f"final/{n.split(' ')[0]}/recall_h{row['horizon']}"] = row[n]
    artifact = wandb.Artifact(f"bank-{name}", type="predictor-bank", metadata={"rows": rows})
    artifact.add_dir(str(bank_path))
    run.log_artifact(artifact)
    run.finish()
