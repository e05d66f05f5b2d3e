"""What a harvest is asked to do: `HarvestConfig`, whose fields and docstring are also the `specmd-harvest` CLI.

    from data_pipelines import HarvestConfig
    config = HarvestConfig(max_tokens=20_000, hidden_layers=[0, 4])
    config.output_path()        # outputs/harvests/embedded-1a2b3c4d (hash of the arguments + model identity)

`HarvestError` is the one error type for bad input: the CLI prints its message on one line and exits non-zero.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from specmd_predict.embedded import EMBEDDED_MODEL_DIR, EMBEDDED_MODEL_NAME
from specmd_predict.io import content_sha256

EMBEDDED_CORPUS_NAME = "embedded"  # `dataset` value selecting the embedded stdlib corpus
DTYPES = ("float32", "bfloat16", "float16", "auto")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's placement strategies
# Arguments that change how fast a harvest runs or where it goes, never what it contains: not hashed.
UNHASHED_FIELDS = (
    "batch_size",
    "device",
    "device_map",
    "experts_implementation",
    "max_memory",
    "offload_folder",
    "num_threads",
    "output_root",
    "output_dir",
    "overwrite",
    "progress",
)
HARVEST_MODES = ("teacher-forced", "generate")
GENERATE_FIELDS = ("mode", "new_tokens", "do_sample", "temperature", "top_p")  # hashed only in generate mode
# Weight files whose sha256 identifies a local model (hashed once per process; hub-cache blobs are named by it).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class HarvestError(ValueError):
    """Bad input to a harvest (model, corpus, arguments, output path): a one-line message for the user."""


@dataclass
class HarvestConfig:
    """Harvest router inputs and expert choices of an MoE model over a text corpus into a `datasets` dataset.

    One row per token: sequence id, position, token id, whether it belongs to the prompt, and for every MoE
    layer the selected experts and their weights, the router input (hidden state) at the kept layers, and
    optionally the full router logits. Same arguments -> the finished harvest is reused. With
    `--mode generate` the model generates from prompts with its KV cache and every forward pass is recorded
    (one prefill pass per batch of prompts, one decode pass per new token), with pass, phase and sequence
    columns added.

    Args:
        model: Hugging Face hub id, local model folder, or "embedded" (the tiny OLMoE shipped in the package).
        revision: Hub revision (branch, tag or commit) of `model`; ignored for local folders.
        dtype: Weights and compute dtype: float32, bfloat16, float16, or auto (the checkpoint's own).
        device: Where the forward runs: cpu, cuda, cuda:1, ..., or auto (cuda when available, else cpu).
        device_map: Split a model too big for one device: "auto", "balanced", "balanced_low_0" or "sequential"
            (accelerate's placement over the GPUs, then CPU, then disk); null: the whole model on `device`.
        max_memory: With device_map, the memory each device may use, e.g. {"0": "70GiB", "cpu": "200GiB"};
            what does not fit goes to offload_folder on disk.
        offload_folder: With device_map, where weights that fit nowhere else are offloaded (on disk).
        num_threads: CPU threads for torch during the harvest (restored after). Default: 1 for a small model
            on CPU (hidden size < 1024: its matmuls gain little from threads, and on a busy machine threads
            waiting on each other make a run several times slower), else torch's own choice.
        experts_implementation: transformers' experts kernel (eager, grouped_mm, batched_mm, ...); auto: eager
            on CPU (several times faster there than grouped_mm), transformers' default on GPU.
        dataset: Text source: "embedded" (the Python stdlib corpus), a Hugging Face dataset name, or local
            files (a .txt/.jsonl/.json/.parquet file, a folder of them, or a glob).
        dataset_config: Configuration name of a Hugging Face dataset (e.g. wikitext-2-raw-v1).
        split: Split of a Hugging Face dataset or local files to read (local files are always "train").
        text_column: Column holding the text (Hugging Face datasets, jsonl and parquet files).
        seq_len: Tokens per sequence (texts are joined with EOS and cut); at most the model's maximum length.
        max_tokens: Harvest at most this many tokens (whole sequences: max_tokens // seq_len of them). The default
            409,600 gives predictors twice the text of the earlier 204,800, which raised their validation recall
            on other text more than any training option did (docs/results/predictors.md).
        prompt_tokens: Tokens of each sequence that form the prefill prompt, the rest being decode steps;
            default: three quarters of seq_len (192 of 256). In generate mode: the prompt length.
        mode: teacher-forced (one forward over each whole text sequence; decode steps are its tokens after
            the prompt) or generate (batched autoregressive generation with a KV cache from prompts of
            prompt_tokens text tokens; each decode step is the model's own forward over one new token).
        new_tokens: Generate mode: decode passes recorded per prompt (tokens generated and read back).
        do_sample: Generate mode: sample with temperature and top_p (seeded by `seed`); false: greedy.
        temperature: Generate mode, sampling: softmax temperature (> 0).
        top_p: Generate mode, sampling: nucleus probability mass in (0, 1].
        batch_size: Sequences per forward pass.
        hidden_layers: MoE layers (0..L-1) whose router inputs are stored; default all, [] for none.
        keep_router_logits: Also store every router's full logits [L, E] per token (float16).
        validation_fraction: Fraction of sequences held out as validation, in (0, 1), at least one sequence (the
            last ones: from the embedded corpus's validation files, or from the tail of the text stream for
            other sources). The default 0.05 of the default 409,600 tokens keeps the 80 validation sequences that
            0.1 of the earlier 204,800 gave (the same text: validation packs the validation files in order).
        seed: Seed of the embedded corpus's file order, and of sampling in generate mode.
        output_root: Folder under which harvests go, each in <model-name>-<8-hex hash of the arguments>/.
        output_dir: Exact output folder instead of one under output_root.
        overwrite: Redo the harvest even if a finished one with the same arguments exists at the output folder.
        progress: Show a progress bar with tokens/s.
    """

    model: str = EMBEDDED_MODEL_NAME
    revision: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    device_map: str | None = None
    max_memory: dict[str, str] | None = None
    offload_folder: str | None = None
    num_threads: int | None = None
    experts_implementation: str = "auto"
    dataset: str = EMBEDDED_CORPUS_NAME
    dataset_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    seq_len: int = 256
    max_tokens: int = 409_600
    prompt_tokens: int | None = None
    mode: str = "teacher-forced"
    new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 16
    hidden_layers: list[int] | None = None
    keep_router_logits: bool = False
    validation_fraction: float = 0.05
    seed: int = 0
    output_root: str = "outputs/harvests"
    output_dir: str | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise HarvestError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.seq_len < 2:
            raise HarvestError(f"seq_len must be at least 2, got {self.seq_len}")
        if self.mode not in HARVEST_MODES:
            raise HarvestError(f"mode must be one of {', '.join(HARVEST_MODES)}, got {self.mode!r}")
        if self.new_tokens < 1:
            raise HarvestError(f"new_tokens must be at least 1, got {self.new_tokens}")
        if not self.temperature > 0:
            raise HarvestError(f"temperature must be above 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise HarvestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < self.sequence_tokens:
            what = "seq_len" if self.mode == "teacher-forced" else "prompt_tokens + new_tokens"
            raise HarvestError(
                f"max_tokens ({self.max_tokens}) is below {what} ({self.sequence_tokens}): no sequence fits"
            )
        if not 1 <= self.resolved_prompt_tokens <= (self.resolved_prompt_tokens if self.is_generate else self.seq_len):
            raise HarvestError(f"prompt_tokens must be in 1..seq_len ({self.seq_len}), got {self.prompt_tokens}")
        if self.num_threads is not None and self.num_threads < 1:
            raise HarvestError(f"num_threads must be at least 1, got {self.num_threads}")
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise HarvestError(f"device_map must be one of {', '.join(DEVICE_MAPS)}, got {self.device_map!r}")
        if self.batch_size < 1:
            raise HarvestError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise HarvestError(
                f"validation_fraction must be in (0, 1): training and evaluation need a validation split, got "
                f"{self.validation_fraction}"
            )
        if self.num_sequences < 2:
            raise HarvestError(
                f"max_tokens {self.max_tokens} gives {self.num_sequences} sequence of {self.seq_len} tokens; at "
                "least 2 are needed (one for training, one for validation)"
            )
        if self.hidden_layers is not None:
            if len(set(self.hidden_layers)) != len(self.hidden_layers) or any(l < 0 for l in self.hidden_layers):
                raise HarvestError(f"hidden_layers must be distinct MoE layer indices >= 0, got {self.hidden_layers}")
            self.hidden_layers = sorted(self.hidden_layers)

    @property
    def resolved_prompt_tokens(self) -> int:
        return self.seq_len * 3 // 4 if self.prompt_tokens is None else self.prompt_tokens

    @property
    def is_generate(self) -> bool:
        return self.mode == "generate"

    @property
    def text_tokens(self) -> int:
        """Tokens of text per sequence: the whole sequence (teacher-forced) or the prompt (generate)."""
        return self.resolved_prompt_tokens if self.is_generate else self.seq_len

    @property
    def sequence_tokens(self) -> int:
        """Harvested rows (tokens) per sequence: seq_len, or in generate mode prompt_tokens + new_tokens."""
        return self.resolved_prompt_tokens + self.new_tokens if self.is_generate else self.seq_len

    @property
    def num_sequences(self) -> int:
        return self.max_tokens // self.sequence_tokens

    def is_embedded_model(self) -> bool:
        return self.model == EMBEDDED_MODEL_NAME

    def model_path(self) -> str:
        """What `from_pretrained` gets: the embedded model's folder, a local folder, or the hub id."""
        return str(EMBEDDED_MODEL_DIR) if self.is_embedded_model() else self.model

    def model_short_name(self) -> str:
        if self.is_embedded_model():
            return EMBEDDED_MODEL_NAME
        name = Path(self.model.rstrip("/")).name or "model"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", name)

    def content_args(self) -> dict:
        """The arguments that decide what a harvest contains (hashed into its folder name)."""
        args = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in UNHASHED_FIELDS}
        args["prompt_tokens"] = self.resolved_prompt_tokens
        if not self.is_generate:  # generation options change nothing here; old fingerprints stay valid
            for name in GENERATE_FIELDS:
                args.pop(name)
        elif not self.do_sample:
            args.pop("temperature"), args.pop("top_p")
        return args

    def fingerprint(self) -> str:
        """8 hex digits over the content arguments and the model's identity as found on disk."""
        payload = {"args": self.content_args(), "model": _model_files_identity(self.model_path())}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def output_path(self) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(self.output_root) / f"{self.model_short_name()}-{self.fingerprint()}"

    def to_dict(self) -> dict:
        return asdict(self)


def describe_error(err: BaseException) -> str:
    """`TypeName: first line of the message`, for wrapping a library's error into a one-line HarvestError."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _model_files_identity(model_path: str) -> dict:
    """The identity of a model before loading it: sha256 of its config and of every weight file.

    Contents, not mtimes: a fresh clone or copy of the same model reuses its harvests, and retraining a
    local model in place changes the hashes, so a stale harvest is not reused. A hub id is identified by its
    name and revision (in `content_args`).
    """
    folder = Path(model_path)
    if not folder.is_dir():
        return {"hub_id": model_path}
    config = folder / "config.json"
    weights = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return {
        "config_sha256": content_sha256(config) if config.exists() else None,
        "weights": [(p.name, content_sha256(p)) for p in weights],
    }
