"""The demo's table (`make demo`'s bench) with its rows one after another and side by side, in one run.

    python benchmarks/bench_jobs.py [--jobs 1 2]

Each setting trains and evaluates the demo rows from scratch in a temporary folder: `jobs 1` is one process with
all of torch's threads, `jobs N` is N worker processes sharing them (`erasekit bench --jobs N`). Wall seconds are
for the whole table (training, evaluation, report); the rows' ASRs are printed beside them so a change of thread
count that changed a number is seen.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from erasekit.bench import bench_report, demo_config
from erasekit.pipeline import quiet_libraries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    quiet_libraries()
    walls, worst = {}, {}
    for jobs in args.jobs:
        cfg = demo_config().model_copy(update={"jobs": jobs})
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            payload = bench_report(cfg, Path(out), progress=False)
            walls[jobs] = time.perf_counter() - t0
        worst[jobs] = {row: r["metrics"]["robustness"]["worst"] for row, r in payload["rows"].items()}
    print(f"the demo's bench ({', '.join(demo_config().rows)}), {torch.get_num_threads()} torch threads in all")
    print(f"{'jobs':>4} {'wall s':>8} {'speed-up':>9}  worst ASR per row")
    for jobs, wall in walls.items():
        rows = ", ".join(f"{row} {100 * v:.0f} %" for row, v in worst[jobs].items())
        print(f"{jobs:>4} {wall:>8.0f} {walls[args.jobs[0]] / wall:>8.2f}x  {rows}")


if __name__ == "__main__":
    main()
