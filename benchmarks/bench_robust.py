"""The robust recipe's cost beside AdvUnlearn's, side by side in one run on the shapes world.

    python benchmarks/bench_robust.py [--iters 20] [--concept circle] [--json docs/bench/robust-cost.json]

Runs the shipped shapes recipes (`advunlearn`, and `robust`'s two stages) for `--iters` iterations each, every
iteration with its inner attack on (warm-up 0), and prints UNet calls and seconds per iteration, the one-off setup
(trajectory banks) and a projection to the recipe's own number of iterations: setup + iterations x s/it. The
projection is an estimate: the recipes' warm-up iterations skip the attack, and the first iterations need not cost
what a long run's later ones do (the runs' own `seconds` are the measured cost). Robust's stage 2 trains behind the
encoder its stage 1 just trained here (a few iterations), which changes what it learns, not what an iteration costs.
Stage 2 learns a new concept inversion every `invert_every` (10) iterations: keep --iters a multiple of it so the
row pays its share. `--json` writes the table for docs/results.md (`python -m erasekit.bench.docs`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from erasekit.bench import commit
from erasekit.bench.docs import cost_table
from erasekit.domains import domain_for, method_config, run_method
from erasekit.pipeline import quiet_libraries


def measure(method: str, concept: str, iters: int, out: str) -> tuple[dict, dict]:
    """(the recipe's config as shipped, the summary of an `iters`-iteration run of it with warm-up 0)."""
    domain = domain_for("shapes")
    shipped, _ = method_config(domain, method, [concept])
    short = {"steps": iters, "warmup": 0, "checkpoint_every": 10**9}
    sets = {**short, "stage1": short} if method == "robust" else short
    config, _ = method_config(domain, method, [concept], sets=sets)
    return shipped.model_dump(), run_method(domain, method, config, out, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--concept", default="circle")
    ap.add_argument("--json", type=Path, help="also write the table here, for docs/results.md")
    args = ap.parse_args()
    quiet_libraries()
    summaries = []
    with tempfile.TemporaryDirectory() as out:
        shipped, s = measure("advunlearn", args.concept, args.iters, f"{out}/advunlearn")
        summaries.append(("AdvUnlearn (encoder)", shipped["steps"], s))
        shipped, s = measure("robust", args.concept, args.iters, f"{out}/robust")
        summaries.append(("Robust stage 1 (encoder)", shipped["stage1"]["steps"], s["stage1"]))
        summaries.append(("Robust stage 2 (UNet)", shipped["steps"], s))
    keys = ("unet_calls_per_step", "seconds_per_step", "bank_seconds")
    rows = {name: {**{k: s[k] for k in keys}, "recipe_iterations": its} for name, its, s in summaries}
    payload = {
        "kind": "cost",
        "commit": commit(),
        "model": "shapes",
        "concept": args.concept,
        "iterations": args.iters,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    print(cost_table(payload))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
