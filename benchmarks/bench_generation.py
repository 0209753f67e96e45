"""Generation speed: erasekit's harness (`erasekit.generation.generate`) against a bare diffusers pipeline call.

Target (issue 6): the harness runs at >= 95 % of the bare call's speed on the same prompts and seeds. Also shown:
one pipeline call per prompt, the unbatched way, to show what batching buys. Runs alternate and the median of
`--repeats` runs is reported, so background load hits every variant alike.

    python benchmarks/bench_generation.py [--n 64] [--steps 25] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from erasekit.generation import generate
from erasekit.pipeline import load_pipeline
from erasekit.world.prompt_sets import world_set


def bare(pipe, prompts, seeds, steps, guidance):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        return pipe(
            prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="pt"
        ).images


def per_prompt(pipe, prompts, seeds, steps, guidance):
    return torch.cat([bare(pipe, [p], [s], steps, guidance) for p, s in zip(prompts, seeds)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-prompt", action="store_true", help="also time one call per prompt (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline("shapes")
    ps = world_set(args.n)
    variants = {
        "bare diffusers call (one batch)": lambda: bare(pipe, ps.prompts, ps.seeds, args.steps, args.guidance),
        "erasekit generate (batch 64)": lambda: generate(pipe, ps.prompts, ps.seeds, args.steps, args.guidance, 64),
    }
    if args.per_prompt:
        variants["one call per prompt"] = lambda: per_prompt(pipe, ps.prompts, ps.seeds, args.steps, args.guidance)
    outputs = {name: fn() for name, fn in variants.items()}  # warm-up, and the images to compare
    ref = outputs["bare diffusers call (one batch)"].float()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["bare diffusers call (one batch)"])
    print(f"{args.n} prompts, {args.steps} DDIM steps, guidance {args.guidance}, {args.threads} threads, "
          f"median of {args.repeats}")  # fmt: skip
    print("| variant | s (median) | images/s | speed vs bare | max abs diff vs bare |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        diff = (outputs[name].float() - ref).abs().max().item()
        print(f"| {name} | {med:.2f} | {args.n / med:.1f} | {base / med:.1%} | {diff:.1e} |")


if __name__ == "__main__":
    main()
