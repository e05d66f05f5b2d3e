"""`specmd-harvest`: harvest an MoE model's routing over a text corpus (defaults: embedded model and corpus).

    specmd-harvest                                   # embedded model on the stdlib corpus, 409,600 tokens
    specmd-harvest --model allenai/OLMoE-1B-7B-0924 --dataset wikitext --dataset-config wikitext-2-raw-v1 \
        --hidden-layers '[0, 4, 8]' --dtype bfloat16 --device cuda
    specmd-harvest --config harvest.yaml --max-tokens 50000   # YAML file, then command-line overrides
    specmd-harvest --print_config > harvest.yaml             # every option with its default
    specmd-harvest --nproc 4 ...                              # 4 data-parallel processes (starts torchrun)
    torchrun --nproc-per-node 4 -m data_pipelines.cli ...     # the same, launched by hand
    specmd-harvest --nproc 8 --nnodes 2 --rdzv-endpoint node0:29400 ...   # the same command on both nodes
    specmd-harvest --model Qwen/Qwen3-30B-A3B --device-map auto --max-memory '{"0": "70GiB", "cpu": "200GiB"}'

Options are the fields of `data_pipelines.HarvestConfig` (dashes or underscores both work; a bare boolean
option such as `--keep-router-logits` means true, `--no-keep-router-logits` false), plus the launch options
--nproc (processes per node), --nnodes, --rdzv-endpoint and --rdzv-timeout (seconds), which
data_pipelines.launch hands to torchrun. Library warnings and info lines appear only with --verbose. Bad input
prints one line `specmd-harvest: error: ...` and exits with status 2; nothing is left half-written. Ctrl-C
exits with 130, also leaving nothing. A rank of a multi-process harvest that dies fails it with one line and
status 1.
"""

from __future__ import annotations

import sys
from dataclasses import fields

from jsonargparse import ArgumentParser

from data_pipelines.config import HarvestConfig, HarvestError
from data_pipelines.distributed import check_share_sizes, launched_rank, launched_world_size
from data_pipelines.launch import LaunchError, launch, split_launch_options
from data_pipelines.load import load_harvest
from data_pipelines.pipeline import ensure_harvest
from specmd_predict.adapters import UnsupportedModelError
from specmd_predict.cli_options import config_parser, normalize_options, quiet_libraries

PROG = "specmd-harvest"


LAUNCH_HELP = (
    "Launch options, taken before the others and handed to torchrun: --nproc N (processes per node, one per GPU), "
    "--nnodes M and --rdzv-endpoint HOST:PORT (the same command on every node), --rdzv-timeout SECONDS (how long "
    "to wait for the rendezvous; default 900)."
)


def build_parser() -> ArgumentParser:
    description = f"{HarvestConfig.__doc__.split(chr(10) * 2)[0]} {LAUNCH_HELP}"
    return config_parser(PROG, HarvestConfig, description=description, fail_untyped=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet = launched_rank() != 0  # under torchrun only rank 0 speaks
    try:
        launch_options, argv = split_launch_options(argv)
    except LaunchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    argv = normalize_options(argv, HarvestConfig)
    parser = build_parser()
    try:
        namespace = parser.parse_args(argv)
        config = HarvestConfig(**{f.name: namespace[f.name] for f in fields(HarvestConfig)})
        quiet_libraries(verbose=namespace["verbose"], progress=config.progress)
        num_processes = launch_options.get("nproc", 1) * launch_options.get("nnodes", 1)
        if num_processes > 1 and launched_world_size() == 1:
            check_share_sizes(config.num_sequences, config.batch_size, num_processes)  # before starting anyone
            return launch("data_pipelines.cli", argv, **launch_options)
        path = ensure_harvest(config)
        harvest = load_harvest(path)
    except (HarvestError, UnsupportedModelError) as err:
        if not quiet:
            print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except LaunchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    if quiet:
        return 0
    m = harvest.manifest
    size = sum(f.stat().st_size for f in (path / "data").iterdir())
    print(f"harvest: {path.resolve()}")
    print(
        f"  {m['num_tokens']:,} tokens in {m['num_sequences']:,} sequences ({len(m['validation_sequence_ids'])} "
        f"validation), {m['model']['num_layers']} MoE layers x top-{m['model']['top_k']} of "
        f"{m['model']['num_experts']} experts, hidden layers kept: {len(m['hidden_layers'])}"
    )
    print(
        f"  {size / 2**20:,.1f} MiB on disk; open with datasets.load_from_disk('{(path / 'data').resolve()}') "
        f"or data_pipelines.load_harvest('{path.resolve()}')"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
