"""The robust recipe's cost beside AdvUnlearn's, side by side in one run on the shapes world.

    python benchmarks/bench_robust.py [--iters 20] [--concept circle]

Runs the shipped shapes recipes (`advunlearn`, and `robust`'s two stages) for `--iters` iterations each, every
iteration with its inner attack on (warm-up 0), and prints UNet calls and seconds per iteration, the one-off setup
(trajectory banks) and a projection to the recipe's own number of iterations: setup + iterations x s/it. The
projection is an estimate: the recipes' warm-up iterations skip the attack, and the first iterations need not cost
what a long run's later ones do (the runs' own `seconds` are the measured cost). Robust's stage 2 trains behind the
encoder its stage 1 just trained here (a few iterations), which changes what it learns, not what an iteration costs.
Stage 2 learns a new concept inversion every `invert_every` (10) iterations: keep --iters a multiple of it so the
row pays its share.
"""

from __future__ import annotations

import argparse
import tempfile

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
    args = ap.parse_args()
    quiet_libraries()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        shipped, s = measure("advunlearn", args.concept, args.iters, f"{out}/advunlearn")
        rows.append(("AdvUnlearn (encoder)", shipped["steps"], s))
        shipped, s = measure("robust", args.concept, args.iters, f"{out}/robust")
        rows.append(("Robust stage 1 (encoder)", shipped["stage1"]["steps"], s["stage1"]))
        rows.append(("Robust stage 2 (UNet)", shipped["steps"], s))
    print(f"shapes world, concept {args.concept}: {args.iters} iterations per row, inner attacks on every iteration")
    head = ("", "UNet calls/it", "s/it", "x AdvUnlearn s/it", "setup s", "recipe its", "projected s")
    print(f"{head[0]:<26} {head[1]:>13} {head[2]:>7} {head[3]:>17} {head[4]:>8} {head[5]:>10} {head[6]:>11}")
    base = rows[0][2]["seconds_per_step"]
    total = {"AdvUnlearn": 0.0, "Robust": 0.0}
    for name, its, s in rows:
        projected = s["bank_seconds"] + its * s["seconds_per_step"]
        total[name.split()[0]] += projected
        print(
            f"{name:<26} {s['unet_calls_per_step']:>13.1f} {s['seconds_per_step']:>7.2f} "
            f"{s['seconds_per_step'] / base:>17.2f} {s['bank_seconds']:>8.1f} {its:>10d} {projected:>11.0f}"
        )
    ratio = total["Robust"] / total["AdvUnlearn"]
    print(
        f"whole recipe, projected: Robust {total['Robust']:.0f} s, AdvUnlearn {total['AdvUnlearn']:.0f} s ({ratio:.1f}x)"
    )


if __name__ == "__main__":
    main()
