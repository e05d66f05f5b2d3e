"""Run a harvest: model + text -> `<output>/data/` (a `datasets` dataset) and `<output>/manifest.json`.

    from data_pipelines import HarvestConfig, ensure_harvest
    path = ensure_harvest(HarvestConfig())      # reuses a finished harvest with the same arguments
    path = harvest(HarvestConfig())             # always (re)does it

Order of work: every check that can fail on bad input (model type, sequence length, text column, an empty
corpus, an unwritable output) runs before anything is written. Rows are written batch by batch into a
hidden temp folder beside the target (`.<name>.partial-<pid>`), the manifest last, and the folder is then
renamed into place: an interrupted harvest never looks complete, and its leftovers are removed by the
next harvest of the same target.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from data_pipelines.background import BackgroundWriter
from data_pipelines.config import HarvestConfig, HarvestError, describe_error
from data_pipelines.distributed import Ranks, check_share_sizes, join_group
from data_pipelines.generate import GenerateRecorder, generate_features
from data_pipelines.manifest import (
    DATA_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    harvest_problem,
    verify_harvest,
    write_manifest,
)
from data_pipelines.model import (
    LoadedModel,
    check_model_config,
    load_model,
    load_tokenizer,
    model_identity,
    model_name_or_path,
    resolve_device,
)
from data_pipelines.recorder import BatchRecorder, PendingBatch
from data_pipelines.sources import TextSource, open_text_source
from data_pipelines.writer import ShardWriter, finish_dataset_folder, harvest_features
from specmd_predict.io import git_commit, replace_dir, target_lock, versions

REPO_ROOT = Path(__file__).resolve().parent.parent


def is_finished(path: Path) -> bool:
    """A harvest folder is finished when its manifest exists (written last, before the rename)."""
    return (Path(path) / MANIFEST_NAME).is_file() and (Path(path) / DATA_NAME).is_dir()


def read_manifest(path: Path) -> dict:
    return json.loads((Path(path) / MANIFEST_NAME).read_text())


def ensure_harvest(config: HarvestConfig) -> Path:
    """The path of a finished harvest for `config`: reused when one with the same arguments exists and every
    file still matches its recorded checksum; a damaged one is harvested again (saying so on stderr)."""
    target = config.output_path()
    if is_finished(target) and not config.overwrite:
        problem = harvest_problem(target)
        if problem is not None:
            print(f"{problem}; harvesting it again", file=sys.stderr)
            return harvest(config)
        recorded = read_manifest(target).get("fingerprint")
        if recorded == config.fingerprint():
            return target
        raise HarvestError(
            f"{target} holds a harvest with other arguments (fingerprint {recorded}, these give "
            f"{config.fingerprint()}); pass overwrite=True or another output_dir"
        )
    return harvest(config, _reuse_if_finished=not config.overwrite)


def _reusable(target: Path, config: HarvestConfig) -> bool:
    """A finished, undamaged harvest of exactly these arguments is at `target`."""
    if not is_finished(target) or harvest_problem(target) is not None:
        return False
    return verify_harvest(target).get("fingerprint") == config.fingerprint()


def harvest(config: HarvestConfig, _reuse_if_finished: bool = False) -> Path:
    """Harvest `config` into its output folder (replacing a finished harvest there); return the folder.

    Launched by torchrun (WORLD_SIZE > 1), every rank calls this: each harvests its share of the batches
    (data_pipelines.distributed) and rank 0 finishes the one dataset; all ranks return the same folder.
    """
    target = config.output_path()
    _check_target(target)
    check_model_config(config)  # config.json only
    ranks = join_group(resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0"))).type)
    try:
        return _harvest(config, target, ranks, _reuse_if_finished)
    finally:
        ranks.close()


@dataclass(frozen=True)
class HarvestRun:
    """What the steps of one harvest share on every rank: the text, the model, the settings, the kept layers."""

    source: TextSource
    loaded: LoadedModel
    config: HarvestConfig
    hidden_layers: list[int]
    ranks: Ranks


def _harvest(config: HarvestConfig, target: Path, ranks: Ranks, reuse_if_finished: bool) -> Path:
    if ranks.distributed:
        check_share_sizes(config.num_sequences, config.batch_size, ranks.world_size)
        if config.device_map is not None:
            raise HarvestError("device_map with several processes is not supported: use one or the other")
    source = open_text_source(config)  # checks the text column on the first row
    tokenizer = load_tokenizer(config)
    batches = _batches(source, tokenizer, config)
    first = next(batches, None)
    if first is None:
        raise HarvestError(f"empty corpus: {config.dataset} yields no full sequence of {config.text_tokens} tokens")
    loaded = load_model(config, tokenizer, local_rank=ranks.local_rank)  # weights only once the input is good
    hidden_layers = list(range(loaded.adapter.num_layers)) if config.hidden_layers is None else config.hidden_layers
    run = HarvestRun(source, loaded, config, hidden_layers, ranks)
    created: list[Path] = []
    partial: Path | None = None
    parents_error = None
    if ranks.is_main:
        try:
            created = _make_parents(target.parent)
        except HarvestError as err:
            parents_error = err
    try:
        with target_lock(target) if ranks.is_main and parents_error is None else nullcontext():
            # Two processes (say training and evaluation) asking for the same harvest: the second waits,
            # then finds it finished. Rank 0 decides for all ranks.
            plan = None
            if ranks.is_main:
                if parents_error is not None:
                    plan = {"error": str(parents_error), "exception": parents_error}
                else:
                    plan = _plan(config, target, reuse_if_finished)
                    partial = plan.get("partial")
            plan = ranks.broadcast(_public(plan))
            if "error" in plan:
                if ranks.is_main:
                    raise parents_error or HarvestError(plan["error"])
                raise HarvestError(f"rank 0 failed: {plan['error']}")
            if plan["reuse"]:
                return target
            partial = Path(plan["partial"])
            share = ranks.share(-(-config.num_sequences // config.batch_size))
            rank_batches = _share(itertools.chain([first], batches), share, last=share.stop * config.batch_size
                                  >= config.num_sequences)  # fmt: skip
            rank_folder = partial / (DATA_NAME if not ranks.distributed else f"rank-{ranks.rank:05d}")
            outcome = _run_share(
                lambda: _write(rank_folder, rank_batches, run),
                _num_threads(config, loaded),
                ranks,
            )
            outcomes = ranks.gather(outcome)
            failed = [(r, o["error"]) for r, o in enumerate(outcomes) if "error" in o]
            if failed:
                rank, error = failed[0]
                raise HarvestError(error if rank == ranks.rank or not ranks.distributed else f"rank {rank}: {error}")
            finish_error = None
            if ranks.is_main:
                try:
                    write_manifest(partial, _finish(partial, outcomes, run))
                    replace_dir(partial, target)
                except HarvestError as err:
                    finish_error = err
            # no rank returns before the folder is in place, or before it hears why not
            status = ranks.broadcast(None if finish_error is None else str(finish_error))
            if finish_error is not None:
                raise finish_error
            if status is not None:
                raise HarvestError(f"rank 0 failed: {status}")
    except BaseException:
        if ranks.is_main:
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
            for folder in reversed(created):  # leave no empty folders we made either
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    return target


def _plan(config: HarvestConfig, target: Path, reuse_if_finished: bool) -> dict:
    """Rank 0, under the target lock: reuse a finished harvest, or make the temp folder for this one."""
    try:
        if reuse_if_finished and _reusable(target, config):
            return {"reuse": True}
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        _remove_stale_partials(target)
        try:
            partial.mkdir()
        except OSError as err:
            raise HarvestError(f"cannot write to {partial.parent}: {describe_error(err)}") from err
        return {"reuse": False, "partial": partial}
    except HarvestError as err:
        return {"error": str(err), "exception": err}


def _public(plan: dict | None) -> dict | None:
    """What other ranks need of rank 0's plan (picklable, no exception objects)."""
    if plan is None:
        return None
    if "exception" in plan:
        if not isinstance(plan["exception"], HarvestError):
            raise plan["exception"]
        return {"error": plan["error"]}
    return {"reuse": plan["reuse"], "partial": str(plan.get("partial"))}


def _share(batches: Iterator[torch.Tensor], share: range, last: bool) -> Iterator[tuple[int, torch.Tensor]]:
    """(batch index, ids) of this rank's share. The rank with the last share reads the stream to its end,
    so the text source knows its validation sequences (set once the stream is exhausted)."""
    for index, ids_BS in enumerate(batches):
        if index >= share.stop and not last:
            return
        if index in share:
            yield index, ids_BS


def _run_share(write: Callable[[], dict], num_threads: int | None, ranks: Ranks) -> dict:
    """Run `write` (this rank's `_write`) with `num_threads` torch threads; a bad-input error is returned, not
    raised, so the other ranks hear of it at the gather instead of waiting for a rank that left."""
    try:
        with _torch_threads(num_threads):
            result = write()
    except HarvestError as err:
        if not ranks.distributed:
            raise
        return {"error": str(err)}
    return result


SMALL_HIDDEN_SIZE = 1024  # below it, CPU matmuls gain little from more than one thread


def _num_threads(config: HarvestConfig, loaded: LoadedModel) -> int | None:
    if config.num_threads is not None:
        return config.num_threads
    if loaded.device.type == "cpu" and loaded.adapter.hidden_size < SMALL_HIDDEN_SIZE:
        return 1
    return None


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run with `num_threads` torch threads, then give the caller's setting back (harvest is a library call)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write(folder: Path, batches: Iterator[tuple[int, torch.Tensor]], run: HarvestRun) -> dict:
    """Forward this rank's batches and write their shards (on a writer thread); returns what rank 0 needs."""
    loaded, config, hidden_layers, ranks = run.loaded, run.config, run.hidden_layers, run.ranks
    features = _features(loaded, config, hidden_layers)
    start = time.perf_counter()
    num_sequences = 0
    num_batches = len(ranks.share(-(-config.num_sequences // config.batch_size)))
    bar = tqdm(
        total=num_batches * config.batch_size * config.sequence_tokens,
        unit="tok",
        unit_scale=True,
        desc="harvest" if not ranks.distributed else f"harvest (rank 0 of {ranks.world_size})",
        disable=not config.progress or not ranks.is_main,
        dynamic_ncols=True,
    )
    shards = ShardWriter(folder, features, config.fingerprint())
    try:
        with (
            bar,
            _recorder(loaded, config, hidden_layers) as recorder,
            BackgroundWriter(shards) as writer,
        ):
            for index, ids_BS in batches:
                writer.submit(_record(recorder, ids_BS, index * config.batch_size, loaded.device))
                num_sequences += ids_BS.shape[0]
                bar.update(ids_BS.shape[0] * config.sequence_tokens)
        files = shards.finish_shards()
    except BaseException:
        shards.abort()
        raise
    return {
        "shards": [str(f) for f in files],
        "num_rows": shards.num_rows,
        "num_sequences": num_sequences,
        "data_bytes": shards.num_bytes,
        "seconds": time.perf_counter() - start,
        "validation_ids": sorted(run.source.validation_ids),
        "device": str(loaded.device),
        "num_threads": torch.get_num_threads(),
    }


def _features(loaded: LoadedModel, config: HarvestConfig, hidden_layers: list[int]):
    adapter = loaded.adapter
    features = harvest_features(
        adapter.num_layers,
        adapter.top_k,
        adapter.num_experts,
        adapter.hidden_size,
        len(hidden_layers),
        router_logits=config.keep_router_logits,
    )
    return generate_features(features) if config.is_generate else features


def _record(recorder, ids_BS: torch.Tensor, first_sequence_id: int, device: torch.device) -> PendingBatch:
    """The recorder's asynchronous record (teacher-forced), or its finished columns wrapped alike (generate)."""
    if isinstance(recorder, BatchRecorder):
        return recorder.record(ids_BS, first_sequence_id)
    return PendingBatch(recorder(ids_BS.to(device), first_sequence_id), {}, [], None)


def _finish(partial: Path, outcomes: list[dict], run: HarvestRun) -> dict:
    """Rank 0: every rank's shards (rank order = batch order) become one dataset folder; returns the manifest."""
    source, loaded, config, hidden_layers, ranks = run.source, run.loaded, run.config, run.hidden_layers, run.ranks
    shards = [Path(f) for outcome in outcomes for f in outcome["shards"]]
    missing = [f for f in shards if not f.is_file()]
    if missing:
        raise HarvestError(
            f"shard {missing[0]} written by another rank is not visible here: the output folder must be on a "
            "filesystem all nodes share"
        )
    num_rows = sum(o["num_rows"] for o in outcomes)
    fingerprint = config.fingerprint()
    finish_dataset_folder(partial / DATA_NAME, shards, _features(loaded, config, hidden_layers), fingerprint, num_rows)
    if ranks.distributed:
        for outcome in outcomes:
            Path(outcome["shards"][0]).parent.rmdir()  # the emptied rank folders
    num_sequences = sum(o["num_sequences"] for o in outcomes)
    seconds = max(o["seconds"] for o in outcomes)
    num_tokens = num_sequences * config.sequence_tokens
    validation_ids = outcomes[-1]["validation_ids"]  # the last rank read the stream to its end
    num_validation = len(validation_ids)
    if num_validation < 1 or num_sequences - num_validation < 1:
        raise HarvestError(
            f"the corpus gave {num_sequences} sequence(s) of {config.sequence_tokens} tokens, {num_validation} of them "
            "validation: training and evaluation need at least one of each; give more text or max_tokens, or a "
            "larger validation_fraction"
        )
    adapter = loaded.adapter
    prompt_tokens = config.resolved_prompt_tokens
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "model": {
            **model_identity(loaded),
            "name_or_path": model_name_or_path(config),
            "revision": config.revision,
            "expert_bytes": adapter.expert_bytes(),
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "max_length": loaded.max_length,
            "checkpoint_dtype": str(loaded.checkpoint_dtype).removeprefix("torch.")
            if loaded.checkpoint_dtype
            else None,
            "checkpoint_expert_bytes": adapter.expert_bytes(loaded.checkpoint_dtype)
            if loaded.checkpoint_dtype
            else None,
        },
        "corpus": source.describe(),
        "args": {
            **config.to_dict(),
            "prompt_tokens": prompt_tokens,
            "device": outcomes[0]["device"],
            "device_map": loaded.device_map,
            "num_threads": outcomes[0]["num_threads"],
            "num_processes": ranks.world_size,
        },
        "versions": versions("torch", "transformers", "datasets", "pyarrow"),
        "git_commit": git_commit(),
        "num_tokens": num_tokens,
        "num_sequences": num_sequences,
        "seq_len": config.sequence_tokens,  # rows per sequence (generate mode: prompt + new tokens)
        "mode": config.mode,
        "hidden_layers": hidden_layers,
        "prompt_tokens": prompt_tokens,
        "validation_sequence_ids": validation_ids,
        "columns": list(_features(loaded, config, hidden_layers)),
        "data_bytes": sum(o["data_bytes"] for o in outcomes),
        "harvest_seconds": round(seconds, 3),
        "tokens_per_second": round(num_tokens / seconds, 1) if seconds > 0 else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _recorder(loaded: LoadedModel, config: HarvestConfig, hidden_layers: list[int]):
    """One forward per batch of text (teacher-forced), or one generate call recording every pass (generate)."""
    if config.is_generate:
        return GenerateRecorder(
            loaded.model,
            loaded.adapter,
            hidden_layers,
            config.keep_router_logits,
            config.new_tokens,
            do_sample=config.do_sample,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed,
        )
    return BatchRecorder(
        loaded.model, loaded.adapter, hidden_layers, config.keep_router_logits, config.resolved_prompt_tokens
    )


def _batches(source: TextSource, tokenizer, config: HarvestConfig) -> Iterator[torch.Tensor]:
    sequences = source.sequences(tokenizer, config.text_tokens, config.num_sequences, config.validation_fraction)
    while chunk := list(itertools.islice(sequences, config.batch_size)):
        yield torch.from_numpy(np.stack(chunk))


def _check_target(target: Path) -> None:
    """Refuse, before any work, a target that is not ours to replace or a parent we cannot write into."""
    if target.exists() and not target.is_dir():
        raise HarvestError(f"output path {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not is_finished(target):
        raise HarvestError(f"output folder {target} exists and is not a harvest; refusing to replace it")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise HarvestError(f"cannot write to {target}: {parent} is not a writable folder")


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p that returns the folders it created (so a failed harvest can remove them again)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise HarvestError(f"cannot create output folder {path}: a file is in the way") from None
            continue  # another harvest of the same root made it just now: not ours to remove
        except OSError as err:
            raise HarvestError(f"cannot create output folder {path}: {describe_error(err)}") from err
        created.append(path)
    return list(reversed(created))


def _remove_stale_partials(target: Path) -> None:
    """Temp folders of harvests of the same target whose process is gone (killed, power loss)."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
