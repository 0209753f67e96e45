"""Where a text-encoder stage's update comes from: the gradient of each part of its loss at a saved checkpoint.

    python benchmarks/grad_parts.py robust benchmarks/recipes/robust-v23.yaml --config benchmarks/recipes/robust-v28.yaml \
        --seed 2 --checkpoint runs/rob28-s2/stage1/checkpoint
    python benchmarks/grad_parts.py advunlearn shapes/advunlearn --seed 2 --checkpoint runs/adv-s2/checkpoint

For iterations after the checkpoint (the run's own random stream, inner attacks included; iterations that would learn
a new v* are skipped), eq. 3 + 6 of the batch is split into the c* rows, the v* rows on top of the batch
(`inversion_rows`, robust stage 1 only) and gamma times the retain term, each weighted as in the batch loss; prints
the mean gradient norm of each over the trained weights and the mean cosine between the c* and v* gradients.
Needs a stage whose batch rows all keep c* (inversion, unnamed and removed shares 0).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from erasekit.checkpoint import load_checkpoint
from erasekit.domains import domain_for, method_config
from erasekit.methods.advunlearn import AdvUnlearnTrainer
from erasekit.methods.esd import step_generator
from erasekit.methods.robust import RobustConfig, RobustTrainer, original_images, stage1_config
from erasekit.pipeline import load_pipeline, quiet_libraries


def flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten() for g, p in zip(grads, params)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=["robust", "advunlearn"])
    ap.add_argument("recipe")
    ap.add_argument("--config", default=None, help="overlay YAML, as erasekit erase --config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--iterations", type=int, default=40)
    args = ap.parse_args()
    quiet_libraries()
    cfg, _ = method_config(domain_for("shapes"), args.method, ["circle"], args.recipe, args.config, None,
                           {"seed": args.seed})  # fmt: skip
    pipe = load_pipeline("shapes")
    if args.method == "robust":
        cfg = stage1_config(cfg)
    if isinstance(cfg, RobustConfig):
        assert cfg.inversion_share == cfg.unnamed_share == cfg.removed_share == 0, "batch rows must all keep c*"
        original = copy.deepcopy(pipe.text_encoder).requires_grad_(False).eval()
        trainer = RobustTrainer(pipe, cfg, original, original_images(pipe, cfg.prompts))
    else:
        trainer = AdvUnlearnTrainer(pipe, cfg)
    modules = {"trained": trainer.module, **trainer.extra_state()}  # an EMA in the checkpoint is not needed here
    start, _ = load_checkpoint(args.checkpoint, modules, trainer.optimizer)
    trainer.build_bank()
    every = getattr(cfg, "invert_every", None)
    rows = []
    for step in range(start, start + args.iterations):
        if every and (step - cfg.warmup) % every == 0:
            continue
        g = step_generator(cfg.seed, step)
        x, t, prompt = trainer.sample_xt(cfg.batch_size, g)
        retain = trainer.retain_rows(step, g)
        x, t, prompt, ctx = trainer.concept_rows(step, x, t, prompt, g)
        b, n = cfg.batch_size, len(x)
        c_star = trainer.objective(x[:b], t[:b], prompt[:b], ctx[:b], None) * b / n
        kept = trainer.objective(x, t, prompt, ctx, retain) - trainer.objective(x, t, prompt, ctx, None)
        g_c, g_r = flat_grad(c_star, trainer.params), flat_grad(kept, trainer.params)
        row = [g_c.norm().item(), float("nan"), g_r.norm().item(), float("nan")]
        if n > b:
            v_star = trainer.objective(x[b:], t[b:], prompt[b:], ctx[b:], None) * (n - b) / n
            g_v = flat_grad(v_star, trainer.params)
            row[1], row[3] = g_v.norm().item(), F.cosine_similarity(g_c, g_v, 0).item()
        rows.append(row)
    m = [f"{v:.4f}" if v == v else "–" for v in torch.tensor(rows).mean(0).tolist()]  # NaN: no v* rows
    print(
        f"| checkpoint | iterations | norm g(c*) | norm g(v*) | norm g(retain) | cos(c*, v*) |\n|---|---|---|---|---|---|\n"
        f"| {args.checkpoint} (step {start}) | {len(rows)} | {m[0]} | {m[1]} | {m[2]} | {m[3]} |"
    )


if __name__ == "__main__":
    main()
