"""Plug-and-play transfer: attack an erased text encoder sitting on a second UNet (see train_transfer_unet.py).

    python benchmarks/transfer_advunlearn.py --unet runs/unet2/ema_unet --text-encoder runs/adv-circle \
        --attack soft [-n 50] > result.json

`erasekit attack --unet` takes the bundled UNet as the original model, which is wrong here: the reference of
eq. 4 must be the second UNet with the original (bundled) text encoder. This script sets exactly that and
otherwise runs the CLI's attack (same held-out prompts, seeds, attack options and detector); it prints JSON with
the pre- and post-attack circle rates. Utility on the second UNet needs no reference model:
`erasekit evaluate --unet ... --text-encoder ... --attacks none`.
"""

from __future__ import annotations

import argparse
import json
import time

from erasekit import load_pipeline
from erasekit.attacks import AttackConfig, judge, run_attack
from erasekit.domains.shapes import ShapesDomain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet", required=True)
    ap.add_argument("--text-encoder", default=None)
    ap.add_argument("--concept", default="circle")
    ap.add_argument("--attack", choices=("soft", "token"), default="soft")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pipe = load_pipeline("shapes", unet=args.unet, text_encoder=args.text_encoder)
    original = {"text_encoder": load_pipeline("shapes").text_encoder}  # theta_o = (bundled encoder, this UNet)
    plan = ShapesDomain("shapes").attack_plan(args.concept, args.n, args.seed, None, pipe)
    ps = plan.sets["target"]
    t0 = time.perf_counter()
    outcomes = run_attack(
        pipe, original, ps.prompts, ps.seeds, args.attack, AttackConfig(seed=args.seed), args.concept,
        detector=plan.detector, vocabulary=plan.vocabulary,
    )  # fmt: skip
    result = judge(outcomes, plan.detector)
    result.pop("pre"), result.pop("post")
    summary = {"attack": args.attack, "unet": args.unet, "text_encoder": args.text_encoder, **result}
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
