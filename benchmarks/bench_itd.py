"""ItD patch on the shapes world: erasure and preservation rates, gate firing, and generation time with and
without the patch, measured side by side on the same prompts and seeds.

    python benchmarks/bench_itd.py --patch out/itd_circle [--n 100] [--repeats 3] [--json]

Per concept of the patch: the concept rate on held-out prompts naming it (the world classifier's prediction
equals the concept) and the accuracy on prompts naming the other values of its attribute (original vs patched),
with how often the gate fired on each. Timing: `generate` on world prompts, alternating runs, medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from erasekit.generation import generate
from erasekit.methods.itd import ItdPatch
from erasekit.pipeline import bundle_dir, load_pipeline
from erasekit.text import token_ids
from erasekit.world.evaluators import ShapeClassifier
from erasekit.world.prompt_sets import ATTRIBUTES, concept_attribute, retain_set, target_set, world_set


def predictions(pipe, classifier, prompt_set, steps: int, guidance: float) -> dict[str, torch.Tensor]:
    images = generate(pipe, prompt_set.prompts, prompt_set.seeds, steps=steps, guidance=guidance)
    return classifier.predict(images * 2 - 1)


def fired(pipe, patch: ItdPatch, prompts: list[str], concept: str) -> float:
    """Fraction of prompts on which `concept`'s gate fired."""
    with torch.no_grad():
        pipe.text_encoder(token_ids(pipe.tokenizer, prompts))
    return float(patch.last_fired[:, patch.concepts.index(concept)].float().mean())


def quality(pipe, patch: ItdPatch, n: int, steps: int, guidance: float) -> list[dict]:
    classifier = ShapeClassifier.load(bundle_dir() / "classifier")
    rows = []
    for concept in patch.concepts:
        attr = concept_attribute(concept)
        idx = ATTRIBUTES[attr].index(concept)
        tgt, ret = target_set(concept, n, "heldout", seed=7), retain_set(concept, n, "heldout", seed=7)
        row: dict = {"concept": concept}
        for name, attached in (("original", False), ("patched", True)):
            if attached:
                patch.attach(pipe)
            try:
                pt = predictions(pipe, classifier, tgt, steps, guidance)[attr]
                pr = predictions(pipe, classifier, ret, steps, guidance)[attr]
                if attached:
                    row["gate_fired_target"], row["gate_fired_others"] = (
                        fired(pipe, patch, tgt.prompts, concept), fired(pipe, patch, ret.prompts, concept)
                    )  # fmt: skip
            finally:
                patch.detach()
            row[f"{name}_concept_rate"] = float((pt == idx).float().mean())
            row[f"{name}_others_acc"] = float((pr == torch.tensor(ret.labels[attr])).float().mean())
            row[f"{name}_others_drawn_as_concept"] = float((pr == idx).float().mean())
        row["others_kept"] = row["patched_others_acc"] / max(row["original_others_acc"], 1e-9)
        rows.append(row)
    return rows


def timing(pipe, patch: ItdPatch, n: int, repeats: int, steps: int, guidance: float) -> dict:
    ws = world_set(n, "heldout", seed=3)
    times: dict[str, list[float]] = {"original": [], "patched": []}
    generate(pipe, ws.prompts[:4], ws.seeds[:4], steps=steps, guidance=guidance)  # warm-up
    for _ in range(repeats):
        for name in ("original", "patched"):
            if name == "patched":
                patch.attach(pipe)
            t = time.perf_counter()
            generate(pipe, ws.prompts, ws.seeds, steps=steps, guidance=guidance)
            times[name].append(time.perf_counter() - t)
            patch.detach()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "n_images": n,
        "repeats": repeats,
        **{f"{k}_s": v for k, v in med.items()},
        "ratio": med["patched"] / med["original"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", required=True, help="folder written by `erasekit erase --method itd`")
    ap.add_argument("--n", type=int, default=100, help="prompts per set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pipe = load_pipeline("shapes")
    patch = ItdPatch.load(args.patch)
    result: dict = {"patch": args.patch, "tau": patch.tau, "injection": patch.injection, "thresholds": patch.thresholds}
    if not args.skip_quality:
        result["quality"] = quality(pipe, patch, args.n, args.steps, args.guidance)
    if not args.skip_timing:
        result["timing"] = timing(pipe, patch, args.n, args.repeats, args.steps, args.guidance)
    if args.json:
        print(json.dumps(result))
        return
    print(f"patch {args.patch}: tau {patch.tau}, injection {patch.injection}, thresholds {patch.thresholds}")
    for r in result.get("quality", []):
        print(
            f"{r['concept']:>8}: concept rate {r['original_concept_rate']:.1%} -> {r['patched_concept_rate']:.1%} | "
            f"others acc {r['original_others_acc']:.1%} -> {r['patched_others_acc']:.1%} (kept {r['others_kept']:.1%}) | "
            f"others drawn as it {r['original_others_drawn_as_concept']:.1%} -> {r['patched_others_drawn_as_concept']:.1%} | "
            f"gate fired {r['gate_fired_target']:.0%} target / {r['gate_fired_others']:.0%} others"
        )
    if "timing" in result:
        t = result["timing"]
        print(f"{'':>8}  {'original':>10} {'patched':>10} {'ratio':>7}")
        print(
            f"{'time (s)':>8}  {t['original_s']:>10.3f} {t['patched_s']:>10.3f} {t['ratio']:>7.3f}  ({t['n_images']} images)"
        )


if __name__ == "__main__":
    main()
