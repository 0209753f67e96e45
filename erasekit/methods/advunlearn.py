"""AdvUnlearn: adversarial unlearning (bi-level, eq. 5-7 of the method notes), built on the ESD engine.

    inner:  c* = argmin_delta || eps_theta(x_t | c + delta) - eps_o(x_t | c) ||^2               (eq. 4 / 5)
            (prefix_k, k tokens, init from the previous c*, signed Adam = `fast_at`, or one FGSM step, eq. 7)
    outer:  l_ESD(theta, c*) + gamma * E_{c_bar in retain} || eps_theta(x_t|c_bar) - eps_o(x_t|c_bar) ||^2   (eq. 6)

Shapes: c* (pool, k, D) embeddings; x_t (B, C, h, w); contexts (B, L, D).

The first `warmup` iterations train ESD (with the retain term) before the attack switches on. gamma = 0 is
AT-ESD. Two schedules, counted by the UNet-evaluation counter:

    faithful  as the authors' code: every attack step and every outer step draws a fresh x_t by partial DDIM
              (`ddim_steps` steps) with the original model; the retain x_t come from DDIM on the retain prompts.
    cheap     x_t from cached trajectories of the original model (concept bank + retain bank); one x_t per
              iteration is shared by all attack steps and the outer step; the attack's target eps_o(x_t|c) is
              computed once; concept and retain rows go through the UNet in one call; c* is refreshed every
              `attack_every` iterations.

`attack_pool` > 1 keeps that many persistent c*, each concept row continuing one of them (the authors keep one):
a single c* covers one direction of attack at a time, a pool covers several. `attack_widths` gives the pool's
members different numbers of tokens k (member i has widths[i mod n]): the authors train one width, and a model
trained at one width holds that width only (docs/history.md, stop 33). The recipes per domain and kind of
concept are YAML files in `erasekit/recipes/`; their measurements are in docs/results.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from diffusers import StableDiffusionPipeline
from pydantic import Field, model_validator
from transformers import CLIPTextModel

from erasekit.attacks.soft import SoftAttackConfig, optimize_embeddings
from erasekit.diffusion import BankCache
from erasekit.methods.esd import EraseConfig, EsdTrainer
from erasekit.text import (
    Slots,
    build_slots,
    by_width,
    check_prompts,
    cycled,
    encode_injected,
    random_token_embeddings,
)


class InnerAttackConfig(SoftAttackConfig):
    """The inner attack's defaults as the authors' `fast_at`: a 1-token prefix, 30 signed-Adam steps at lr 1e-3."""

    k: int = Field(1, ge=1)
    steps: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sign", "signed_adam"] = "signed_adam"


class AdvUnlearnConfig(EraseConfig):
    """AdvUnlearn options; defaults as the authors' code for SD (text encoder, 1,000 iterations, lr 1e-5, gamma 0.5)."""

    component: Literal["unet", "text_encoder"] = "text_encoder"
    part: str = "all"
    gamma: float = Field(0.5, ge=0)  # 0.3 for nudity in the paper; 0 = AT-ESD
    warmup: int = Field(200, ge=0)
    attack: InnerAttackConfig = InnerAttackConfig()
    attack_init: Literal["previous", "random"] = "previous"
    attack_pool: int = Field(1, ge=1)  # adversarial prompts kept (1 = the authors' single c*); rows draw one each
    attack_widths: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="tokens k of the pool's members, cycled (member i: widths[i mod n]); empty: every member has "
        "attack.k",
    )
    attack_every: int = Field(1, ge=1)
    schedule: Literal["faithful", "cheap"] = "cheap"  # faithful: x_t by partial DDIM; cheap: cached trajectories

    @model_validator(mode="after")
    def _widths(self) -> AdvUnlearnConfig:
        if len(self.attack_widths) > self.attack_pool:
            raise ValueError(
                f"attack_widths lists {len(self.attack_widths)} widths for a pool of {self.attack_pool}: set "
                "attack_pool to at least that many"
            )
        if self.attack_widths and self.attack.mode == "add":
            raise ValueError("attack_widths needs a mode with its own slots (prefix_k, suffix_k, replace_k), not add")
        return self

    def widths(self) -> list[int]:
        """The soft prefix's widths, one per pool member."""
        return cycled(self.attack_widths or [self.attack.k], self.attack_pool)


class AdversarialPrompt(torch.nn.Module):
    """c*: the current adversarial embeddings (pool, k, D), a buffer so checkpoints carry it."""

    def __init__(self, emb: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("emb", emb)


class AdvUnlearnTrainer(EsdTrainer):
    method = "advunlearn"

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        config: AdvUnlearnConfig,
        dtype: torch.dtype | None = None,
        text_encoder_o: CLIPTextModel | None = None,
        banks: BankCache | None = None,
    ) -> None:
        super().__init__(pipe, config, dtype, text_encoder_o, banks)
        self.config: AdvUnlearnConfig = config
        widths = config.widths()
        check_prompts(self.tokenizer, self.prompts, reserve=max(widths))
        mode, concept = config.attack.mode, config.concepts[0]
        # placeholder slots per width; the pool stores every member at the widest k and uses its first widths[i]
        self.slots = {k: build_slots(self.tokenizer, self.prompts, mode, k, concept) for k in sorted(set(widths))}
        self.width = torch.tensor(widths)  # (pool,)
        g = torch.Generator().manual_seed(config.seed * 7 + 3)
        pool = (config.attack_pool, max(s.k for s in self.slots.values()))
        self.adv = AdversarialPrompt(random_token_embeddings(self.pair.text_encoder_o, pool, g))

    @staticmethod
    def x_source(config: AdvUnlearnConfig) -> str:
        return "ddim" if config.schedule == "faithful" else "cached"

    def extra_state(self) -> dict[str, torch.nn.Module]:
        return {"adversarial_prompt": self.adv}

    def pool_rows(self, batch: int, g: torch.Generator) -> torch.Tensor | None:
        """(batch,) pool indices of the c* each concept row uses; None for the single shared c* (attack_pool 1)."""
        if self.config.attack_pool == 1:
            return None
        return torch.randint(self.config.attack_pool, (batch,), generator=g)

    def adversarial(self, rows: torch.Tensor | None) -> torch.Tensor:
        """c* for the rows, all of one width k: (k, D) shared, or (B, k, D) one pool member per row."""
        if rows is None:
            return self.adv.emb[0, : int(self.width[0])]
        return self.adv.emb[rows, : int(self.width[rows[0]])]

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
        emb, k = emb.detach(), emb.shape[-2]
        if rows is None:
            self.adv.emb[0, :k] = emb
        else:
            self.adv.emb[rows, :k] = emb
        self.log["attack"] = loss.mean().item()

    def concept_context(
        self, step: int, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        """The concept prompts during warm-up, then the prompts with c* from the inner attack (eq. 6's first term).
        Rows whose pool members differ in width are attacked and encoded in one group per width."""
        cfg = self.config
        if step < cfg.warmup:
            return super().concept_context(step, x, t, prompt, g)
        rows = self.pool_rows(len(x), g)
        attack = (step - cfg.warmup) % cfg.attack_every == 0
        if rows is None:
            return self.width_context(int(self.width[0]), x, t, prompt, None, attack, g)

        def group(k: int, sel: torch.Tensor) -> torch.Tensor:
            return self.width_context(k, x[sel.to(x.device)], t[sel.to(t.device)], prompt[sel], rows[sel], attack, g)

        return by_width(self.width[rows], group)

    def width_context(
        self,
        k: int,
        x: torch.Tensor,
        t: torch.Tensor,
        prompt: torch.Tensor,
        rows: torch.Tensor | None,
        attack: bool,
        g: torch.Generator,
    ) -> torch.Tensor:
        """(B, L, D): the prompts with their c*, rows whose pool members all have width k; `attack` runs the inner
        attack on them first."""
        slots = self.slots[k]
        slots = Slots(slots.ids[prompt], slots.positions[prompt], slots.mode)
        if attack:
            self.inner_attack(x, t, prompt, slots, rows, g)
        return encode_injected(self.pair.text_encoder, slots, self.adversarial(rows))


def erase(
    pipe: StableDiffusionPipeline,
    config: AdvUnlearnConfig,
    output,
    progress: bool = True,
    dtype: torch.dtype | None = None,
) -> dict:
    """Run AdvUnlearn on `pipe` (changed in place); writes the artifact + checkpoints to `output`."""
    return AdvUnlearnTrainer(pipe, config, dtype).run(output, progress=progress)
