"""Task arithmetic on two erased text encoders of one base model (Ilharco et al. 2023, "Editing models with task
arithmetic"): theta = theta_0 + a * (theta_A - theta_0) + b * (theta_B - theta_0), written as an artifact that
`erasekit attack --artifact` and `erasekit evaluate --artifact` read. a = 1 - t, b = t interpolates between A and B.

    python benchmarks/merge_encoders.py A_DIR B_DIR -a 0.5 -b 0.5 -o OUT [--model shapes]

A_DIR, B_DIR: artifacts (or robust-recipe stage-1 folders) holding text_encoder/. Used to ask whether an encoder that
holds the soft prefix (AdvUnlearn) and one that holds concept inversion (robust stage 1 with inversion rows) combine
into one that holds both (docs/history.md, stop 26).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import CLIPTextModel

from erasekit.artifact import load_original_component, save_artifact


def merge(base: torch.nn.Module, a: torch.nn.Module, b: torch.nn.Module, wa: float, wb: float) -> torch.nn.Module:
    """`base` changed in place to base + wa * (a - base) + wb * (b - base), parameter by parameter."""
    pa, pb = a.state_dict(), b.state_dict()
    with torch.no_grad():
        for name, p in base.state_dict().items():
            p.copy_(p + wa * (pa[name] - p) + wb * (pb[name] - p))
    return base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("-a", "--weight-a", type=float, default=0.5)
    ap.add_argument("-b", "--weight-b", type=float, default=0.5)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--model", default="shapes")
    args = ap.parse_args()
    base = load_original_component(args.model, "text_encoder")
    enc = [CLIPTextModel.from_pretrained(str(d / "text_encoder")) for d in (args.a, args.b)]
    merged = merge(base, *enc, args.weight_a, args.weight_b)
    info_a = json.loads((args.a / "erasekit.json").read_text())
    info = {
        "method": "merge",
        "concepts": info_a.get("concepts", []),
        "sources": {str(args.a): args.weight_a, str(args.b): args.weight_b},
        "config": {"model": args.model},
    }
    save_artifact(args.output, "text_encoder", merged, info)
    print(args.output)


if __name__ == "__main__":
    main()
