"""AdvUnlearn: adversarial unlearning (bi-level, eq. 5-7 of the method notes), built on the ESD engine.

    inner:  c* = argmin_delta || eps_theta(x_t | c + delta) - eps_o(x_t | c) ||^2               (eq. 4 / 5)
            (prefix_k, k = 1, init from the previous c*, signed Adam = `fast_at`, or one FGSM step, eq. 7)
    outer:  l_ESD(theta, c*) + gamma * E_{c_bar in retain} || eps_theta(x_t|c_bar) - eps_o(x_t|c_bar) ||^2   (eq. 6)

The first `warmup` iterations train ESD (with the retain term) before the attack switches on. gamma = 0 is
AT-ESD. Two schedules, counted by the UNet-evaluation counter:

    faithful  as the authors' code: every attack step and every outer step draws a fresh x_t by partial DDIM
              (50 steps) with the original model; the retain x_t come from DDIM on the retain prompts.
    cheap     x_t from cached trajectories of the original model (concept bank + retain bank); one x_t per
              iteration is shared by all attack steps and the outer step; the attack's target eps_o(x_t|c) is
              computed once; concept and retain rows go through the UNet in one call; c* is refreshed every
              `attack_every` iterations.

Shapes-world recipe (`AdvUnlearnConfig.SHAPES_DEFAULTS`, filled in for unset options by
`erasekit.methods.default_prompts`), measured on the bundled world with the CLI (circle, held-out prompts; the
soft attack is the evaluation's: a 3-token prefix per prompt and seed, 200 Adam steps, judged every 25 steps):
- `retain_null`: the empty prompt joins every retain batch. The sampler's unconditional branch reads the trained
  encoder too; without it the empty prompt's context drifted by 46 % (relative norm) and 46 % of circle prompts
  still drew circles before any attack.
- lr 1e-3 (SD's 1e-5 barely moves the 0.3 M-parameter encoder), retain batch 24 (extra rows of the same UNet
  call, no extra calls).
- inner attack k = 3, 10 signed-Adam steps at lr 1e-2 per iteration, matching the evaluation's 3-token prefix
  attack: 12 UNet calls per attack iteration (the faithful schedule: 962 with the authors' 30 steps).
- `attack_pool` 32: 32 persistent c*, each concept row continuing one of them. With the authors' single shared
  c* (300 iterations) circles came back under the soft attack on 65 % of the first 20 prompts (76 % of 50);
  with 16 c*: 35 %; with 32 c* and 500 iterations: 15 % (12 % of 50), other shapes 0.94 (original 0.94).
- DDIM 25 (the evaluation's sampler), 32 cached trajectories, 500 iterations with 75 of warm-up.
- eq. 2's anchor: the concept's nearest value in the bundled encoder (`erasekit.world.anchor`; circle ->
  square), eta 0.25 and gamma 10. `EsdConfig.anchor` makes eq. 2's reference each training prompt with the
  concept word replaced, and the training prompts add 40 world prompts naming a colour and a background. With
  eta 0, eq. 2's target is the anchor prompt's eps_o: the concept is mapped onto its neighbour instead of pushed
  past it; a small eta adds a little of ESD's push away from the concept. The inner attack, the pool of c* and
  the retain term are unchanged. Measured (soft / token ASR on 50 prompts; training seeds 0, 1, 2 on the same
  evaluation sets):
  - the recipe (eta 0.25): circles 0 / 0 / 2 %, soft 6 / 20 / 16 %, token 0 / 0 / 2 %, other shapes 0.94 at
    all three, colour 0.995, CLIP 0.909 / 0.907 / 0.904, FID 2.26 / 2.12 / 2.12 (original 2.00), FID without
    circle prompts 2.99 / 2.83 / 2.76 (2.74). Circle prompts draw squares in the asked colour.
  - eta 0 (seeds 0, 1): circles 0 / 0 %, soft 18 / 32 %, token 0 / 2 %, other shapes 0.94, FID 2.19 / 2.17,
    without circles 2.92 / 2.94: the soft ASR is not robust to the training seed.
  - square, eta 0.5: circles 4 %, soft 6 %, token 14 %, other shapes 0.90, FID 2.46, without circles 2.99.
  - square, eta 1: the target points past square, away from circle; circle prompts drew flared trapezoids, 24 %
    of them read as circles (soft 34 %, token 38 %), FID 2.73.
  - the paper's empty reference (`--set anchor=null --eta 1 --gamma 3`, an earlier recipe): circle prompts drew
    other shapes in the wrong colour (ESD's target reverses the colour too; the causal encoder carries it in the
    positions after the shape word). Colour 0.885, CLIP 0.766, FID 4.23, without circles 3.03, soft 12 %,
    token 0 %, other shapes 0.94.
  - anchor "" (the word dropped), eta 2, gamma 10 (an earlier recipe): circles 0 %, soft 14 %, token 0 %,
    other shapes 0.92, colour 0.98, FID 3.58, without circles 3.12; circle prompts drew triangles, and the
    unchanged model with "circle" rewritten to "triangle" already scores 2.65 (`benchmarks/fid_floor.py`;
    to "square": 1.96). eta 1: soft 22 %, FID 3.40; the four other shapes averaged as the anchor lost the
    colour again (colour 0.91, FID 4.67).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from diffusers import StableDiffusionPipeline
from pydantic import Field, model_validator

from erasekit.attacks.soft import SoftAttackConfig, optimize_embeddings
from erasekit.methods.esd import EsdConfig, EsdTrainer
from erasekit.text import Slots, build_slots, check_prompts, encode_injected, random_token_embeddings
from erasekit.world.anchor import nearest_anchor


class InnerAttackConfig(SoftAttackConfig):
    """The inner attack's defaults as the authors' `fast_at`: a 1-token prefix, 30 signed-Adam steps at lr 1e-3."""

    k: int = Field(1, ge=1)
    steps: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sign", "signed_adam"] = "signed_adam"


class AdvUnlearnConfig(EsdConfig):
    """AdvUnlearn options; defaults as the authors' code for SD (text encoder, 1,000 iterations, lr 1e-5, gamma 0.5)."""

    component: Literal["unet", "text_encoder"] = "text_encoder"
    part: str = "all"
    gamma: float = Field(0.5, ge=0)  # 0.3 for nudity in the paper; 0 = AT-ESD
    warmup: int = Field(200, ge=0)
    attack: InnerAttackConfig = InnerAttackConfig()
    attack_init: Literal["previous", "random"] = "previous"
    attack_pool: int = Field(1, ge=1)  # adversarial prompts kept (1 = the authors' single c*); rows draw one each
    attack_every: int = Field(1, ge=1)
    schedule: Literal["faithful", "cheap"] = "cheap"

    # The shapes world's recipe (applied by `erasekit.methods.default_prompts` to unset options; see the module
    # docstring for the measurements behind each value).
    SHAPES_DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 500, "warmup": 75, "lr": 1e-3, "batch_size": 2, "retain_batch": 24,
        "retain_null": True, "ddim_steps": 25, "cache_size": 32, "checkpoint_every": 50,
        "attack": {"k": 3, "lr": 1e-2, "steps": 10}, "attack_pool": 32, "anchor": nearest_anchor, "eta": 0.25, "gamma": 10.0,
    }  # fmt: skip

    @model_validator(mode="after")
    def _schedule_sets_xt(self) -> AdvUnlearnConfig:
        self.xt_mode = "ddim" if self.schedule == "faithful" else "cached"
        return self


class AdversarialPrompt(torch.nn.Module):
    """c*: the current adversarial embeddings (pool, k, D), a buffer so checkpoints carry it."""

    def __init__(self, emb: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("emb", emb)


class AdvUnlearnTrainer(EsdTrainer):
    method = "advunlearn"

    def __init__(self, pipe: StableDiffusionPipeline, config: AdvUnlearnConfig) -> None:
        super().__init__(pipe, config)
        self.config: AdvUnlearnConfig = config
        check_prompts(self.tokenizer, self.prompts, reserve=config.attack.k)
        self.slots = build_slots(self.tokenizer, self.prompts, config.attack.mode, config.attack.k, config.concepts[0])
        g = torch.Generator().manual_seed(config.seed * 7 + 3)
        pool = (config.attack_pool, self.slots.k)
        self.adv = AdversarialPrompt(random_token_embeddings(self.pair.text_encoder_o, pool, g))

    def extra_state(self) -> dict[str, torch.nn.Module]:
        return {"adversarial_prompt": self.adv}

    def pool_rows(self, batch: int, g: torch.Generator) -> torch.Tensor | None:
        """(batch,) pool indices of the c* each concept row uses; None for the single shared c* (attack_pool 1)."""
        if self.config.attack_pool == 1:
            return None
        return torch.randint(self.config.attack_pool, (batch,), generator=g)

    def adversarial(self, rows: torch.Tensor | None) -> torch.Tensor:
        """c* for the rows: (k, D) shared, or (B, k, D) one pool member per row."""
        return self.adv.emb[0] if rows is None else self.adv.emb[rows]

    def inner_attack(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        prompt: torch.Tensor,
        slots: Slots,
        rows: torch.Tensor | None,
        g: torch.Generator,
    ) -> None:
        """Update c* (the rows' pool members) against the current model (eq. 4 with the optimiser of eq. 7 / fast_at).

        slots: the concept rows' prompts with their c* positions (B rows, as `prompt`)."""
        cfg = self.config
        if cfg.schedule == "cheap":
            with torch.no_grad():
                target = self.pair.eps(x, t, self.ctx_o[prompt], original=True)

            def provider(_: torch.Generator):
                return x, t, target
        else:

            def provider(gen: torch.Generator):
                xx, tt, pp = self.sample_xt(len(prompt), gen)
                with torch.no_grad():
                    return xx, tt, self.pair.eps(xx, tt, self.ctx_o[pp], original=True)

        init = self.adversarial(rows)
        if cfg.attack_init == "random":
            init = random_token_embeddings(self.pair.text_encoder_o, tuple(init.shape[:-1]), g)
        emb, loss = optimize_embeddings(self.pair, slots, init, provider, cfg.attack, g)
        emb = emb.detach()
        if rows is None:
            self.adv.emb[0] = emb
        else:
            self.adv.emb[rows] = emb
        self.log["attack"] = loss.mean().item()

    def concept_context(
        self, step: int, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        """The concept prompts during warm-up, then the prompts with c* from the inner attack (eq. 6's first term)."""
        cfg = self.config
        if step < cfg.warmup:
            return super().concept_context(step, x, t, prompt, g)
        rows = self.pool_rows(len(x), g)
        slots = Slots(self.slots.ids[prompt], self.slots.positions[prompt], self.slots.mode)
        if (step - cfg.warmup) % cfg.attack_every == 0:
            self.inner_attack(x, t, prompt, slots, rows, g)
        return encode_injected(self.pair.text_encoder, slots, self.adversarial(rows))


def erase(pipe: StableDiffusionPipeline, config: AdvUnlearnConfig, output, progress: bool = True) -> dict:
    """Run AdvUnlearn on `pipe` (changed in place); writes the artifact + checkpoints to `output`."""
    return AdvUnlearnTrainer(pipe, config).run(output, progress=progress)
