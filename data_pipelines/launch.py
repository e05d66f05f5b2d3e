"""`specmd-harvest --nproc N`: start the harvest under torchrun's own launcher (torch.distributed.run).

    specmd-harvest --nproc 4 --max-tokens 4000000                       # one node, 4 processes
    specmd-harvest --nproc 8 --nnodes 2 --rdzv-endpoint node0:29400 ... # the same command on both nodes

This is exactly `torchrun --standalone --nproc-per-node N -m data_pipelines.cli ...` (or, with --nnodes,
torchrun's c10d rendezvous at --rdzv-endpoint), with torchrun's failure report turned into one line: a rank
that dies (killed, out of memory) fails the whole harvest, and the others are stopped by torchrun before rank 0
can rename anything into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from data_pipelines.config import describe_error

LAUNCH_OPTIONS = {"--nproc": int, "--nnodes": int, "--rdzv-endpoint": str, "--rdzv-timeout": int}
DEFAULT_RDZV_TIMEOUT = 900  # seconds torchrun waits for every node to join (its own default)


class LaunchError(ValueError):
    """Bad launch options (status 2) or a failed launch (status 1): one line for the user."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def split_launch_options(argv: list[str]) -> tuple[dict, list[str]]:
    """Take --nproc, --nnodes, --rdzv-endpoint, --rdzv-timeout (dashes or underscores) out of `argv`."""
    options: dict = {}
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        name, sep, value = arg.partition("=")
        key = name.replace("_", "-")
        if key in LAUNCH_OPTIONS:
            if not sep:
                value = next(args, None)
                if value is None:
                    raise LaunchError(f"{key} needs a value")
            try:
                options[key[2:].replace("-", "_")] = LAUNCH_OPTIONS[key](value)
            except ValueError as err:
                raise LaunchError(f"{key} must be {LAUNCH_OPTIONS[key].__name__}, got {value!r}") from err
        else:
            rest.append(arg)
    for key in ("nproc", "nnodes"):
        if key in options and options[key] < 1:
            raise LaunchError(f"--{key} must be at least 1, got {options[key]}")
    if options.get("nnodes", 1) > 1 and "rdzv_endpoint" not in options:
        raise LaunchError("--nnodes above 1 needs --rdzv-endpoint host:port (the same on every node)")
    return options, rest


def launch(module: str, argv: list[str], nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
           rdzv_timeout: int = DEFAULT_RDZV_TIMEOUT) -> int:  # fmt: skip
    """Run `python -m module argv` on nproc x nnodes ranks through torchrun; 0, or raise LaunchError."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    if nnodes > 1:
        _probe_rendezvous(rdzv_endpoint, rdzv_timeout)
        # every node runs the same command, so the rendezvous id must not be random: hash of the command
        run_id = hashlib.sha256(" ".join([module, *argv]).encode()).hexdigest()[:16]
        rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", run_id]
        rendezvous += ["--rdzv-conf", f"join_timeout={rdzv_timeout},read_timeout={rdzv_timeout}"]
    else:  # torchrun --standalone
        rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--rdzv-id", str(uuid.uuid4())]
    args = torchrun.parse_args(
        ["--nnodes", str(nnodes), "--nproc-per-node", str(nproc), "--max-restarts", "0", *rendezvous,
         "-m", module, *argv]
    )  # fmt: skip
    _silence_torchrun_logs()  # its report becomes our one line
    config, cmd, cmd_args = torchrun.config_from_args(args)
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except ChildFailedError as err:
        codes = {rank: failure.exitcode for rank, failure in err.failures.items()}
        if codes.get(0) == 2 or all(code == 2 for code in codes.values()):
            return 2  # bad input: rank 0 already printed its one line (torchrun then stopped the others)
        # the rank that failed first, not those torchrun then stopped with SIGTERM
        stopped = -signal.SIGTERM.value
        rank, code = min((c == stopped, c == 2, r, c) for r, c in codes.items())[2:]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        raise LaunchError(f"rank {rank} {how}; the harvest failed and left no finished output", status=1) from err
    except Exception as err:  # rendezvous: unreachable endpoint, timeout, ...
        where = rdzv_endpoint or "localhost"
        raise LaunchError(
            f"cannot start {nnodes} x {nproc} processes through the rendezvous at {where}: {describe_error(err)}"
        ) from err
    return 0


def _silence_torchrun_logs() -> None:
    """torch's elastic loggers set their own levels (LOGLEVEL or WARNING): raise each one that exists."""
    import torch.distributed.elastic.agent.server.api  # noqa: F401  (create the loggers first)
    import torch.distributed.elastic.multiprocessing.api  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _probe_rendezvous(endpoint: str, timeout: int) -> None:
    """On a node that does not host the rendezvous, wait (up to `timeout`) for its store to answer, so an
    unreachable endpoint is one line instead of torch's retry log. The host itself starts the store later."""
    from datetime import timedelta

    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.utils import _matches_machine_hostname, parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(endpoint, default_port=29400)
    if _matches_machine_hostname(host):
        return
    try:
        with _stderr_to_devnull():  # TCPStore logs every retry with a C++ stack trace
            TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout), wait_for_workers=False)
    except Exception as err:
        raise LaunchError(
            f"rendezvous {endpoint} unreachable within {timeout} s ({describe_error(err)}); start the first node, "
            "check the address, or raise --rdzv-timeout"
        ) from err


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
