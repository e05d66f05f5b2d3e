"""Checksum throughput: sha256 against xxhash's xxh3_128 on the same file, side by side in one run.

    python benchmarks/checksums.py                    # a 512 MiB random file, 3 rounds
    python benchmarks/checksums.py --mib 2048 --rounds 5

Why it exists: every reader of a harvest hashes all of its data files before use (data_pipelines/manifest.py),
so the hash's speed is a cost every train and eval run pays once. The file is written once to a temp folder
(then in the page cache, as a harvest just read is); in each round both algorithms hash it, one after the
other, so load from other processes hits them alike. Reported: GiB/s of each (best round) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from specmd_predict.io import file_checksum  # noqa: E402

ALGORITHMS = ("sha256", "xxh3_128")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the test file in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best of each algorithm is reported")
    args = parser.parse_args(argv)
    best = dict.fromkeys(ALGORITHMS, float("inf"))
    with tempfile.TemporaryDirectory(prefix="checksum-bench-") as tmp:
        path = Path(tmp) / "data.bin"
        with path.open("wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(2**20))
        for _ in range(args.rounds):
            for algorithm in ALGORITHMS:
                start = time.perf_counter()
                file_checksum(path, algorithm)
                best[algorithm] = min(best[algorithm], time.perf_counter() - start)
    gib = args.mib / 1024
    result = {a: round(gib / s, 3) for a, s in best.items()} | {"ratio": round(best["sha256"] / best["xxh3_128"], 2)}
    for algorithm in ALGORITHMS:
        print(f"{algorithm:>9}: {result[algorithm]:.2f} GiB/s")
    print(f"xxh3_128 is {result['ratio']:.1f}x as fast as sha256 on {args.mib} MiB")
    return result


if __name__ == "__main__":
    main()
