"""What the whole-world FID allows a perfect eraser: the original model with every concept prompt rewritten.

`erasekit evaluate` measures FID over all world prompts (the concept's included) against rendered random scenes.
A perfect eraser still changes the concept prompts' images, so that FID moves by itself, by an amount that depends
on what the concept becomes. This script draws the world prompts with the unchanged model after rewriting the
concept word into: itself (the original row), each other value of its attribute, and the other values in turn,
and prints the FID of each next to the evaluation's (same prompts, seeds, sampler, features and reference).

    python benchmarks/fid_floor.py [--concept circle] [--seeds 0 1 2]

Measured for circle (200 world prompts, about 8 min on 2 cores for three seeds):

| circle prompts draw | FID seed 0 | FID seed 1 | FID seed 2 |
|---|---|---|---|
| circle (original) | 2.00 | 1.55 | 1.78 |
| the others in turn | 2.34 | 1.93 | 1.82 |
| circle -> square | 1.96 | 1.47 | 1.58 |
| circle -> triangle | 2.65 | 2.30 | 2.01 |
| circle -> cross | 2.36 | 1.73 | 1.72 |
| circle -> star | 3.68 | 3.91 | 3.13 |

The original's FID moves by a quarter between seeds, and what the concept turns into moves it by as much again:
squares lower it at every seed, stars nearly double it.
"""

from __future__ import annotations

import argparse
import re

import torch

from erasekit.domains.shapes import ShapesDomain
from erasekit.eval.harness import EvalConfig
from erasekit.eval.metrics import fid_from_features
from erasekit.generation import generate
from erasekit.pipeline import load_pipeline
from erasekit.world.prompt_sets import ATTRIBUTES, concept_attribute, world_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="circle")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=200, help="world prompts (the evaluation's --n-world)")
    args = ap.parse_args()
    others = [v for v in ATTRIBUTES[concept_attribute(args.concept)] if v != args.concept]
    word = re.compile(rf"\b{re.escape(args.concept)}\b")
    pipe = load_pipeline("shapes")
    rows = {}
    for seed in args.seeds:
        cfg = EvalConfig(model="shapes", concept=args.concept, seed=seed, n_world=args.n)
        ps = world_set(args.n, seed=seed)
        plan = ShapesDomain("shapes").eval_plan(cfg, pipe, torch.device("cpu"))
        feats = plan.features
        ref = feats.image_features(plan.reference)
        variants = {f"{args.concept} (original)": [args.concept], "the others in turn": others}
        variants.update({f"{args.concept} -> {o}": [o] for o in others})
        for name, words in variants.items():
            prompts = [word.sub(words[i % len(words)], p) for i, p in enumerate(ps.prompts)]
            images = generate(pipe, prompts, ps.seeds, steps=cfg.sample_steps, guidance=cfg.guidance)
            rows.setdefault(name, []).append(fid_from_features(ref, feats.image_features(images)))
    print(f"| {args.concept} prompts draw | " + " | ".join(f"FID seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for name, fids in rows.items():
        print(f"| {name} | " + " | ".join(f"{f:.2f}" for f in fids) + " |")


if __name__ == "__main__":
    main()
