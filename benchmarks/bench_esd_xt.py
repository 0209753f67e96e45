"""ESD x_t modes side by side on the shapes world: UNet evaluations and seconds per training step.

    python benchmarks/bench_esd_xt.py [--steps 40] [--component unet] [--part xattn] [--batch-size 1]

`ddim` is the faithful mode (partial DDIM, 50 steps, from fresh noise every step); `cached` samples
`cache_size` full trajectories once (the setup columns) and reads x_t from them. The last column projects a
whole run: setup + 1000 steps.
"""

from __future__ import annotations

import argparse
import tempfile

from erasekit import load_pipeline
from erasekit.methods.esd import EsdConfig, EsdTrainer


def print_table(title: str, unit: str, runs: dict[str, dict]) -> None:
    """One row per run summary: UNet calls/rows and seconds per step, setup (trajectory bank) cost, projection."""
    print(title)
    print(
        f"{'':<9} {'UNet calls/' + unit:>16} {'rows/' + unit:>10} {'s/' + unit:>8} {'setup calls':>12} "
        f"{'setup s':>8} {'s, 1000 ' + unit + 's':>14}"
    )
    for name, s in runs.items():
        total = s["bank_seconds"] + 1000 * s["seconds_per_step"]
        print(
            f"{name:<9} {s['unet_calls_per_step']:>16.2f} {s['unet_rows_per_step']:>10.1f} "
            f"{s['seconds_per_step']:>8.3f} {s['bank_unet_calls']:>12d} {s['bank_seconds']:>8.1f} {total:>14.0f}"
        )
    (a, x), (b, y) = runs.items()
    print(
        f"{b} / {a}: {y['unet_calls_per_step'] / x['unet_calls_per_step']:.3f} of the UNet calls per {unit}, "
        f"{x['seconds_per_step'] / y['seconds_per_step']:.1f}x faster per {unit}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--component", default="unet")
    ap.add_argument("--part", default="xattn")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--cache-size", type=int, default=64)
    args = ap.parse_args()
    runs = {}
    for mode in ("ddim", "cached"):
        cfg = EsdConfig(
            concepts=["circle"], prompts=["a circle"], component=args.component, part=args.part, steps=args.steps,
            batch_size=args.batch_size, xt_mode=mode, cache_size=args.cache_size, lr=1e-4, checkpoint_every=10**9,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as out:
            runs[mode] = EsdTrainer(load_pipeline("shapes"), cfg).run(out, progress=False)
    print_table(f"ESD-{args.component}-{args.part}, {args.steps} steps, batch {args.batch_size}", "step", runs)


if __name__ == "__main__":
    main()
