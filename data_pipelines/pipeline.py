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
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from data_pipelines.config import HarvestConfig, HarvestError, describe_error
from data_pipelines.generate import GenerateRecorder, generate_features
from data_pipelines.manifest import (
    DATA_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    harvest_problem,
    verify_harvest,
    write_manifest,
)
from data_pipelines.model import LoadedModel, check_model_config, load_model, load_tokenizer, model_name_or_path
from data_pipelines.recorder import BatchRecorder
from data_pipelines.sources import TextSource, open_text_source
from data_pipelines.writer import ShardWriter, harvest_features
from specmd_predict.io import git_commit, replace_dir, target_lock

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
    """Harvest `config` into its output folder (replacing a finished harvest there); return the folder."""
    target = config.output_path()
    _check_target(target)
    check_model_config(config)  # config.json only
    source = open_text_source(config)  # checks the text column on the first row
    tokenizer = load_tokenizer(config)
    batches = _batches(source, tokenizer, config)
    first = next(batches, None)
    if first is None:
        raise HarvestError(f"empty corpus: {config.dataset} yields no full sequence of {config.text_tokens} tokens")
    loaded = load_model(config, tokenizer)  # the weights, only once the input is known to be good
    hidden_layers = list(range(loaded.adapter.num_layers)) if config.hidden_layers is None else config.hidden_layers
    created = _make_parents(target.parent)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        with target_lock(target):
            # Two processes (say training and evaluation) asking for the same harvest: the second waits,
            # then finds it finished.
            if _reuse_if_finished and _reusable(target, config):
                return target
            _remove_stale_partials(target)
            with _torch_threads(_num_threads(config, loaded)):
                manifest = _write(partial, itertools.chain([first], batches), source, loaded, config, hidden_layers)
            write_manifest(partial, manifest)
            replace_dir(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in reversed(created):  # leave no empty folders we made either
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return target


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


def _write(
    partial: Path,
    batches: Iterator[torch.Tensor],
    source: TextSource,
    loaded: LoadedModel,
    config: HarvestConfig,
    hidden_layers: list[int],
) -> dict:
    adapter = loaded.adapter
    features = harvest_features(
        adapter.num_layers,
        adapter.top_k,
        adapter.num_experts,
        adapter.hidden_size,
        len(hidden_layers),
        router_logits=config.keep_router_logits,
    )
    if config.is_generate:
        features = generate_features(features)
    try:
        partial.mkdir()
    except OSError as err:
        raise HarvestError(f"cannot write to {partial.parent}: {describe_error(err)}") from err
    fingerprint = config.fingerprint()
    prompt_tokens = config.resolved_prompt_tokens
    start = time.perf_counter()
    num_sequences = 0
    bar = tqdm(
        total=config.num_sequences * config.sequence_tokens,
        unit="tok",
        unit_scale=True,
        desc="harvest",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    with (
        bar,
        ShardWriter(partial / DATA_NAME, features, fingerprint) as writer,
        _recorder(loaded, config, hidden_layers) as recorder,
    ):
        for ids_BS in batches:
            writer.write(recorder(ids_BS.to(loaded.device), first_sequence_id=num_sequences))
            num_sequences += ids_BS.shape[0]
            bar.update(ids_BS.shape[0] * config.sequence_tokens)
    seconds = time.perf_counter() - start
    num_tokens = num_sequences * config.sequence_tokens
    num_validation = len(source.validation_ids)
    if num_validation < 1 or num_sequences - num_validation < 1:
        raise HarvestError(
            f"the corpus gave {num_sequences} sequence(s) of {config.sequence_tokens} tokens, {num_validation} of them "
            "validation: training and evaluation need at least one of each; give more text or max_tokens, or a "
            "larger validation_fraction"
        )
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "model": {
            **adapter.identity(),
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
            "device": str(loaded.device),
            "num_threads": torch.get_num_threads(),
        },
        "versions": _versions(),
        "git_commit": git_commit(),
        "num_tokens": num_tokens,
        "num_sequences": num_sequences,
        "seq_len": config.sequence_tokens,  # rows per sequence (generate mode: prompt + new tokens)
        "mode": config.mode,
        "hidden_layers": hidden_layers,
        "prompt_tokens": prompt_tokens,
        "validation_sequence_ids": sorted(source.validation_ids),
        "columns": list(features),
        "data_bytes": writer.num_bytes,
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
    for path in reversed(missing):
        try:
            path.mkdir()
        except OSError as err:
            raise HarvestError(f"cannot create output folder {path}: {describe_error(err)}") from err
    return list(reversed(missing))


def _remove_stale_partials(target: Path) -> None:
    """Temp folders of harvests of the same target whose process is gone (killed, power loss)."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _versions() -> dict:
    import datasets
    import pyarrow
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
    }
