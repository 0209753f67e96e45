"""What an erased model draws when the concept's word is NOT in the prompt: a robustness probe outside the
package's attacks (nothing is optimised). An inversion attack only has to beat this floor.

    python benchmarks/unnamed_concept.py ARTIFACT [ARTIFACT ...] [--model shapes] [--concept circle]
        [--words ball ring round disc dot oval] [--random 3] [--width 1] [--n 50]

For each artifact (or `original`), on the domain's held-out target prompts with their seeds, the detector's
concept rate when the concept's word is: kept; removed; replaced by each of `--words` (related real words); replaced
by `--width` random vocabulary tokens' embeddings (`--random` draws, the starting point of the inversion attack at
`--set inversion.k=WIDTH`); and for the empty prompt (the sampler's unconditional branch). Prints a Markdown table
and its JSON.
"""

from __future__ import annotations

import argparse
import json
import re

import torch

from erasekit.attacks.inversion import placement
from erasekit.attacks.sampling import Sampling, draw_embedded
from erasekit.domains import domain_for
from erasekit.generation import generate
from erasekit.methods import erased_parts, load_erased
from erasekit.pipeline import load_pipeline
from erasekit.text import random_token_embeddings


def rates(pipe, plan, concept: str, words: list[str], draws: int, width: int) -> dict[str, float]:
    """{variant: concept rate} over the plan's target set."""
    ps = plan.sets["target"]
    prompts, seeds = ps.prompts, ps.seeds
    word = re.compile(rf"\s*\b{re.escape(concept)}\b", re.IGNORECASE)

    def rate(texts: list[str]) -> float:
        return plan.detector(generate(pipe, texts, seeds)).float().mean().item()

    out = {"as named": rate(prompts), "word removed": rate([word.sub("", p) for p in prompts])}
    out.update({f"'{w}'": rate([word.sub(f" {w}", p).strip() for p in prompts]) for w in words})
    modes = [placement(pipe.tokenizer, p, concept) for p in prompts]
    sampling = Sampling(25, 5.0, 50)
    for r in range(draws):
        emb = random_token_embeddings(pipe.text_encoder, (width,), torch.Generator().manual_seed(r))
        images = draw_embedded(pipe, prompts, seeds, [emb] * len(prompts), modes, concept, sampling)
        out[f"random token{'s' * (width > 1)} {r}"] = plan.detector(images).float().mean().item()
    out["empty prompt"] = rate([""] * len(prompts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", help="erasekit erase output folders, or 'original'")
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--concept", default="circle")
    ap.add_argument("--words", nargs="*", default=["ball", "ring", "round", "disc", "dot", "oval"])
    ap.add_argument("--random", type=int, default=3)
    ap.add_argument("--width", type=int, default=1, help="random tokens per draw, in the word's place")
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    domain = domain_for(args.model)
    original = load_pipeline(args.model)
    plan = domain.attack_plan(args.concept, args.n, 0, None, original)
    table = {}
    for art in args.artifacts:
        pipe = original if art == "original" else load_erased(args.model, erased_parts(art))
        table[art] = rates(pipe, plan, args.concept, args.words, args.random, args.width)
    variants = list(next(iter(table.values())))
    print(
        f"concept rate of '{args.concept}' on {args.n} held-out prompts ({args.model}); one prompt = {100 / args.n:g} points"
    )
    print("| model | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for art, row in table.items():
        print(f"| {art} | " + " | ".join(f"{row[v]:.0%}" for v in variants) + " |")
    print(json.dumps(table))


if __name__ == "__main__":
    main()
