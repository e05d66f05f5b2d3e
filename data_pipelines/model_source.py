"""Where a model comes from, checked before `from_pretrained` runs: a local folder that exists, or a hub id
that the hub (or, offline, the local cache) knows; and never a folder's own Python code.

    check_model_source(config)                 # one-line HarvestError, in about a second, or nothing
    load_error(config, err)                    # a from_pretrained failure as a one-line HarvestError

Why: `--model /does/not/exist` used to say "Repo id must be in the form ...", and an unknown hub id spent
30 s in transformers' retries with no network. Every `from_pretrained` in the project passes
`trust_remote_code=False` (a model folder with an `auto_map` would otherwise ask on stdin, and piping "y"
ran the folder's code); this module turns transformers' refusal into a line that names the folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from data_pipelines.config import HarvestConfig, HarvestError, describe_error

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"
HUB_TIMEOUT_S = 10


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but now (callers such as specmd-eval set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def check_model_source(config: HarvestConfig) -> None:
    """Refuse, in one line, a model path that does not exist or a hub id the hub does not know."""
    if config.is_embedded_model():
        return
    model = config.model
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise HarvestError(f"model path {model} is a file; give the model's folder (with config.json)")
        return
    looks_like_path = model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
    if looks_like_path or not HUB_ID.match(model):
        raise HarvestError(f"model path {model} does not exist (and it is not a Hugging Face hub id)")
    _check_hub_id(model, config.revision)


def _check_hub_id(repo_id: str, revision: str | None) -> None:
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    cached = isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    if hub_offline():
        if not cached:
            raise HarvestError(
                f"model {repo_id!r} is neither a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE "
                "is set: download it first or give a local folder"
            )
        return
    try:
        model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise HarvestError(
            f"no model {repo_id!r} on the Hugging Face hub, and no such local folder (private or gated models "
            "need `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise HarvestError(f"model {repo_id!r} has no revision {revision!r} on the Hugging Face hub") from None
    except Exception as err:  # no network, proxy, DNS, timeout: one line instead of 30 s of retries
        hint = "set HF_HUB_OFFLINE=1 to use the cached copy" if cached else "check the network"
        raise HarvestError(
            f"cannot reach the Hugging Face hub for {repo_id!r} ({describe_error(err)}); {hint}"
        ) from None


def load_error(config: HarvestConfig, err: BaseException, what: str = "model") -> HarvestError:
    """A from_pretrained failure as one line; a folder that wants to run its own code is named as such."""
    if "trust_remote_code" in str(err) or "custom code" in str(err):
        return HarvestError(
            f"{config.model} wants to run its own Python code (auto_map in its config.json); specmd-predict "
            "loads with trust_remote_code=False and supports only model types transformers ships"
        )
    name = "model" if what == "model" else f"the {what} of"
    return HarvestError(f"cannot load {name} {config.model!r}: {describe_error(err)}")
