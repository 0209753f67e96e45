"""AdvUnlearn schedules side by side on the shapes world: UNet evaluations and seconds per iteration.

    python benchmarks/bench_advunlearn.py [--iters 4] [--attack-steps 30] [--attack-every 1]

`faithful` follows the authors' code (fresh 50-step partial-DDIM x_t for every attack step and every outer
step); `cheap` reads x_t from cached trajectories, shares one x_t per iteration and batches the UNet calls.
Both run with the attack on from the first iteration (warm-up 0) so every iteration pays for it.
"""

from __future__ import annotations

import argparse
import tempfile

from bench_esd_xt import print_table

from erasekit import load_pipeline
from erasekit.domains.shapes import retain_prompts
from erasekit.methods.advunlearn import AdvUnlearnConfig, AdvUnlearnTrainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--attack-steps", type=int, default=30)
    ap.add_argument("--attack-every", type=int, default=1)
    args = ap.parse_args()
    retain = retain_prompts(["circle"])
    runs = {}
    for schedule in ("faithful", "cheap"):
        cfg = AdvUnlearnConfig(
            concepts=["circle"], prompts=["a circle"], retain_prompts=retain, steps=args.iters, warmup=0,
            schedule=schedule, attack={"steps": args.attack_steps}, lr=1e-5, checkpoint_every=10**9,
            attack_every=args.attack_every if schedule == "cheap" else 1,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as out:
            runs[schedule] = AdvUnlearnTrainer(load_pipeline("shapes"), cfg).run(out, progress=False)
    title = f"AdvUnlearn (text encoder), {args.iters} iterations, {args.attack_steps} attack steps, retain batch 5"
    print_table(title, "iter", runs)


if __name__ == "__main__":
    main()
