"""Load the model a harvest runs: checks that fail fast (type, length) before any weights are read.

    loaded = load_model(config)       # LoadedModel(model, tokenizer, adapter, device, dtype, max_length)
    tokenizer = load_tokenizer(config)  # alone: a corpus can be checked before the weights are read

Everything goes through `from_pretrained`, so the embedded model, a local folder and a hub id take the same
path; every failure becomes a one-line `HarvestError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from data_pipelines.config import HarvestConfig, HarvestError, describe_error
from data_pipelines.model_source import check_model_source, load_error
from specmd_predict.adapters import (
    ADAPTERS,
    EXCLUDED_MODEL_TYPES,
    MoEAdapter,
    UnsupportedModelError,
    get_adapter,
    supported_model_types,
)
from specmd_predict.embedded import EMBEDDED_MODEL_DIR


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    adapter: MoEAdapter
    device: torch.device
    dtype: torch.dtype  # as loaded (what the forward ran in)
    max_length: int | None
    checkpoint_dtype: torch.dtype | None = None  # as stored: what an offloaded expert costs to move
    device_map: dict | None = None  # accelerate's placement of modules when loaded with a device map


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """`device` as a torch.device; "auto" and a bare "cuda" mean this process's GPU (torchrun's LOCAL_RANK)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise HarvestError(f"unknown device {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HarvestError(f"device {device!r} asked for but CUDA is not available")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", local_rank)
    return resolved


def check_model_config(config: HarvestConfig):
    """Read only the model's config: supported family, sequence length. Returns the text config."""
    from transformers import AutoConfig

    path = config.model_path()
    if config.is_embedded_model() and not (EMBEDDED_MODEL_DIR / "config.json").exists():
        raise HarvestError(
            f"embedded model missing at {EMBEDDED_MODEL_DIR}; build it with scripts/build_embedded_model.py"
        )
    check_model_source(config)  # a missing path or an unknown hub id: one line, fast
    try:
        model_config = AutoConfig.from_pretrained(path, revision=config.revision, trust_remote_code=False)
    except Exception as err:  # OSError, ValueError, hub errors: the user needs one line
        raise load_error(config, err) from err
    text_config = model_config.get_text_config()
    model_type = getattr(text_config, "model_type", None)
    if model_type in EXCLUDED_MODEL_TYPES:
        raise HarvestError(f"model type {model_type!r} is not supported: {EXCLUDED_MODEL_TYPES[model_type]}")
    if model_type in ADAPTERS and ADAPTERS[model_type].harvest_refusal:
        raise HarvestError(f"{model_type} models cannot be harvested: {ADAPTERS[model_type].harvest_refusal}")
    if model_type not in ADAPTERS:
        raise HarvestError(
            f"unsupported model type {model_type!r} ({config.model}): specmd-predict supports MoE "
            f"models of type {', '.join(supported_model_types())}"
        )
    max_length = getattr(text_config, "max_position_embeddings", None)
    if max_length is not None and config.sequence_tokens > max_length:
        what = "prompt_tokens + new_tokens" if config.is_generate else "seq_len"
        raise HarvestError(f"{what} {config.sequence_tokens} is above the model's maximum length {max_length}")
    return text_config


def load_tokenizer(config: HarvestConfig):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(config.model_path(), revision=config.revision, trust_remote_code=False)
    except Exception as err:
        raise load_error(config, err, what="tokenizer") from err


def load_model(config: HarvestConfig, tokenizer=None, local_rank: int = 0) -> LoadedModel:
    """Check the config, then load weights (the slow part) onto the device, in eval mode, with its adapter.

    With `config.device_map`, accelerate places the layers (GPUs, then CPU, then `offload_folder` on disk,
    within `max_memory`) and moves activations between them during the forward.
    """
    from transformers import AutoModelForCausalLM

    text_config = check_model_config(config)
    tokenizer = load_tokenizer(config) if tokenizer is None else tokenizer
    device = resolve_device(config.device, local_rank)
    dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
    kernel = {}
    if config.experts_implementation != "auto":
        kernel = {"experts_implementation": config.experts_implementation}
    elif device.type == "cpu":
        kernel = {"experts_implementation": "eager"}
    placement = _placement(config)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            config.model_path(), revision=config.revision, dtype=dtype, trust_remote_code=False, **kernel, **placement
        )
    except Exception as err:
        if placement:
            raise HarvestError(
                f"device map {config.device_map!r} (max_memory {config.max_memory}) does not fit "
                f"{config.model!r}: {describe_error(err)}"
            ) from err
        raise load_error(config, err) from err
    if placement:
        from data_pipelines.recorder import input_device

        model = model.eval()
        device = input_device(model)
    else:
        model = model.to(device).eval()
    try:
        adapter = get_adapter(model)
    except UnsupportedModelError as err:
        raise HarvestError(str(err)) from err
    if config.hidden_layers and max(config.hidden_layers) >= adapter.num_layers:
        raise HarvestError(
            f"hidden_layers {config.hidden_layers} out of range: the model has "
            f"{adapter.num_layers} MoE layers (0..{adapter.num_layers - 1})"
        )
    max_length = getattr(text_config, "max_position_embeddings", None)
    stored = getattr(text_config, "dtype", None)
    checkpoint_dtype = stored if isinstance(stored, torch.dtype) else getattr(torch, str(stored), None)
    device_map = getattr(model, "hf_device_map", None) if placement else None
    return LoadedModel(
        model,
        tokenizer,
        adapter,
        device,
        next(model.parameters()).dtype,
        max_length,
        checkpoint_dtype,
        {k: str(v) for k, v in device_map.items()} if device_map else None,
    )


def _placement(config: HarvestConfig) -> dict:
    """from_pretrained's device_map / max_memory / offload_folder arguments (accelerate), or none."""
    if config.device_map is None:
        if config.max_memory is not None:
            raise HarvestError("max_memory needs a device_map (e.g. --device-map auto)")
        return {}
    placement = {"device_map": config.device_map}
    if config.max_memory is not None:
        # accelerate wants GPU indices as ints ("0" on the command line)
        placement["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in config.max_memory.items()}
    if config.offload_folder is not None:
        placement["offload_folder"] = config.offload_folder
    return placement


def model_name_or_path(config: HarvestConfig) -> str:
    """What the manifest records: "embedded", a hub id, or an absolute local folder."""
    if config.is_embedded_model():
        return config.model
    return str(Path(config.model).resolve()) if Path(config.model).is_dir() else config.model


def model_identity(loaded: LoadedModel) -> dict:
    """The adapter's identity; under a device map the routers' offloaded weights are loaded for the hash."""
    if not loaded.device_map:
        return loaded.adapter.identity()
    from contextlib import ExitStack

    from accelerate.utils import align_module_device

    with ExitStack() as stack:
        for layer in range(loaded.adapter.num_layers):
            stack.enter_context(align_module_device(loaded.adapter.router(layer), torch.device("cpu")))
        return loaded.adapter.identity()
