"""Robust erasure: AdvUnlearn on the text encoder, then adversarial ESD on the UNet behind it, whose inner attacks
include concept inversion ("search thoroughly, erase once", in the spirit of STEREO, Srivatsan et al. 2024).

    stage 1  the text encoder: AdvUnlearn (`erasekit.methods.advunlearn`, eq. 5-7) with `stage1`'s options, or
             (`stage1_method: robust`) this method's adversarial training on the text encoder in front of the
             original UNet, with the rows listed under stage 2 (the shapes recipe: c* and unnamed u, no v*).
             Optionally (`stage1_soft`) an AdvUnlearn pass continues from stage 1's encoder, eq. 2 targets still
             from the original model: an encoder trained on v* lets the soft prefix back in, and this pass trains
             against it again.
    stage 2  the UNet (ESD's `part`, e.g. cross-attention) behind the stage-1 encoder, against the ORIGINAL model's
             eq. 2 targets (original encoder and UNet):
               l = || eps_theta(x_t | E_1(c_adv)) - [eps_o(x_t|a) - eta (eps_o(x_t|c_e) - eps_o(x_t|a))] ||^2
                   + gamma * || eps_theta(x_t | E_1(c_bar)) - eps_o(x_t | c_bar) ||^2                   (eq. 3 + 6)
             where E_1 is the stage-1 encoder and c_adv is, per concept row, one of:
               - the prompt with an AdvUnlearn soft prefix c* (eq. 4, refreshed against the current UNet),
               - the prompt with a concept-inversion embedding v* in the concept word's place, v* learned by the
                 textual-inversion loss on images of the concept THROUGH the current model (CCE's attack):
                     v* = argmin_v E || eps - eps_theta(x_t(x0) | E_1(caption(v))) ||^2
                 re-learned every `invert_every` iterations into a pool of `inversion_pool`, from a random start
                 every `inversion_restart`-th time and from the newest v* otherwise (warm-started, as AdvUnlearn's c*),
               - the prompt with a random embedding u in the concept word's place (random vocabulary token plus
                 Gaussian noise): the concept left unnamed, trained to the same eq. 2 target, so that the word's
                 place holding something the model does not know is erased too (`unnamed_share`; docs/history.md
                 says what each share measured). Their x_t come from the concept prompts'
                 trajectories, or (`unnamed_xt: unnamed`) from the original model's own trajectories on the prompts
                 with u in the word's place: those reach the concept at the model's unprompted rate, the floor an
                 attack that only has to leave the concept unnamed (an inverted token, a random one) stands on,
               - the prompt with the concept word deleted (`removed_share`), on the original model's trajectories
                 for that prompt: the concept left unsaid, which a model whose default is the concept (the
                 shapes world's is, for a shape) draws without being asked; the eq. 2 target is the named prompt's.
The text-encoder stage removes the concept from the words; the UNet stage removes what an attacker can still reach
in the encoder's input-embedding space. The artifact holds both parts (text_encoder/, unet/).

Both inner attacks can cycle through several widths (`attack_widths`, `inversion_widths`: numbers of tokens per c*
and per v*, and the widths of u): a model trained at one width held that width and not wider ones (docs/history.md,
stop 33).

Shapes: c* (pool, k_max, D), v* (pool, k_v_max, D), each member using its first k; x_t (B, C, h, w); concept latents
x0 (N, C, h, w).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Annotated, Literal

import torch
from diffusers import StableDiffusionPipeline
from pydantic import Field, ValidationError, model_validator
from transformers import CLIPTextModel

from erasekit.attacks.inversion import InversionConfig, concept_latents, learn
from erasekit.config import config_hash
from erasekit.diffusion import BankCache, TrajectoryBank
from erasekit.generation import generate
from erasekit.methods.advunlearn import AdvUnlearnConfig, AdvUnlearnTrainer
from erasekit.text import (
    Slots,
    build_slots,
    by_width,
    cycled,
    encode,
    encode_injected,
    random_token_embeddings,
    token_embedding,
    token_ids,
)

# options every stage takes from the top of the recipe (a stage's own dict may still set one, e.g. its anchor)
SHARED_OPTIONS = ("concepts", "prompts", "retain_prompts", "anchor", "seed")
# what the summary keeps of stage 1's own summary
STAGE_KEYS = ("seconds", "unet_calls", "unet_rows", "unet_calls_per_step", "seconds_per_step", "bank_seconds")


class RobustConfig(AdvUnlearnConfig):
    """Stage 2's options (an AdvUnlearn run on the UNet plus the inversion pool); `stage1` holds stage 1's
    AdvUnlearn options (the concepts, prompts, retain prompts, anchor and seed are shared)."""

    component: Literal["unet", "text_encoder"] = "unet"
    part: str = "xattn"
    stage1: dict = Field(default_factory=dict, description="options of the text-encoder stage")
    stage1_method: Literal["advunlearn", "robust"] = Field(
        "advunlearn",
        description="the text-encoder stage: AdvUnlearn as its paper (soft prefixes only), or this method's own "
        "adversarial training with inversion and unnamed rows (`stage1` then holds RobustConfig options)",
    )
    stage1_soft: dict | None = Field(
        None,
        description="AdvUnlearn options of a soft-prefix pass on the text encoder that continues from stage 1's "
        "encoder (eq. 2 targets still from the original model), between stage 1 and stage 2; None: no such pass",
    )
    inversion: InversionConfig = InversionConfig(steps=100)
    invert_every: int = Field(25, ge=1, description="iterations between two new inversion embeddings")
    inversion_pool: int = Field(8, ge=1, description="inversion embeddings kept (the newest)")
    inversion_widths: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="tokens k of successive inversions, cycled (the n-th v* has widths[n mod len]), and the widths "
        "the unnamed u rows draw from; empty: inversion.k",
    )
    inversion_restart: int = Field(
        1,
        ge=1,
        description="every n-th inversion starts afresh (`inversion.init`); the others continue from the newest "
        "v* against the current model (1: always afresh, as CCE's attack)",
    )
    inversion_share: float = Field(0.5, ge=0, le=1, description="share of concept rows trained at an inversion")
    inversion_rows: int = Field(
        0,
        ge=0,
        description="concept rows per iteration at an inversion embedding ON TOP of the batch (x_t from the concept "
        "bank): every batch row keeps its share, so the soft rows are not thinned to make room for inversion",
    )
    unnamed_share: float = Field(0.0, ge=0, le=1, description="share of concept rows with a random embedding u")
    unnamed_noise: float = Field(1.0, ge=0, description="u's Gaussian noise, in units of the token table's std")
    unnamed_xt: Literal["concept", "unnamed"] = Field(
        "concept",
        description="x_t of the unnamed rows: the concept prompts' trajectories, or the original "
        "model's trajectories on the prompts with a random u in the concept word's place",
    )
    removed_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of concept rows whose prompt has the concept word deleted (the concept left unsaid), on "
        "the original model's trajectories for those prompts",
    )

    @model_validator(mode="after")
    def _shares(self) -> RobustConfig:
        if self.inversion_share + self.unnamed_share + self.removed_share > 1:
            raise ValueError(
                "inversion_share + unnamed_share + removed_share must be at most 1 (the rest of the rows use c*)"
            )
        try:
            stage1_config(self)
        except ValidationError as err:
            kind = "RobustConfig" if self.stage1_method == "robust" else "AdvUnlearnConfig"
            wrong = ", ".join(_where(e) for e in err.errors())
            raise ValueError(f"stage1 is not a valid {kind} ({wrong}): fix those keys or set stage1_method") from None
        try:
            soft_pass_config(self)
        except ValidationError as err:
            wrong = ", ".join(_where(e) for e in err.errors())
            raise ValueError(f"stage1_soft is not a valid AdvUnlearnConfig ({wrong}): fix those keys") from None
        return self

    def inv_widths(self) -> list[int]:
        """The widths successive v* take in turn and u rows draw from (`inversion_widths`, else `inversion.k`)."""
        return self.inversion_widths or [self.inversion.k]


def _where(error: dict) -> str:
    """A pydantic error's field path, or its message when the whole model is at fault (e.g. shares above 1)."""
    return ".".join(map(str, error["loc"])) or error["msg"].removeprefix("Value error, ")


class InversionPool(torch.nn.Module):
    """v*: the newest `size` inversion embeddings (size, k_max, D) with their widths (size,) (member i uses its first
    width[i] tokens) and how many were pushed, buffers for checkpoints."""

    def __init__(self, size: int, k: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("emb", torch.zeros(size, k, dim))
        self.register_buffer("width", torch.zeros(size, dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def newest(self, k: int) -> torch.Tensor | None:
        """(k, D): the last pushed embeddings of width k; None when the pool holds none."""
        for n in range(int(self.filled) - 1, int(self.filled) - 1 - self.members(), -1):
            slot = n % len(self.emb)
            if int(self.width[slot]) == k:
                return self.emb[slot, :k].clone()
        return None

    def push(self, emb: torch.Tensor) -> None:
        """Store emb (k, D), k at most the pool's k_max, in the oldest slot."""
        slot = int(self.filled) % len(self.emb)
        self.emb[slot] = 0
        self.emb[slot, : len(emb)] = emb.to(self.emb)
        self.width[slot] = len(emb)
        self.filled += 1

    def members(self) -> int:
        return min(int(self.filled), len(self.emb))


class RobustTrainer(AdvUnlearnTrainer):
    """AdvUnlearn with concept-inversion embeddings among c_adv: stage 2 (the UNet behind the stage-1 encoder), or
    stage 1 with `stage1_method: robust` (the text encoder in front of the original UNet)."""

    method = "robust"

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        config: RobustConfig,
        text_encoder_o,
        concept_images: torch.Tensor,
        dtype: torch.dtype | None = None,
        banks: BankCache | None = None,
    ) -> None:
        super().__init__(pipe, config, dtype, text_encoder_o, banks)
        self.config: RobustConfig = config
        self.x0 = concept_latents(pipe, concept_images)
        self.inv_widths = config.inv_widths()
        k_max = max(self.inv_widths)
        self.pool = InversionPool(config.inversion_pool, k_max, pipe.text_encoder.config.hidden_size)
        concept = config.concepts[0]  # replace_k slots in its place, one set per width
        self.inv_slots = {
            k: build_slots(self.tokenizer, self.prompts, "replace_k", k, concept) for k in self.inv_widths
        }
        self.unnamed_bank: TrajectoryBank | None = None  # cached x_t of the unnamed prompts (`unnamed_xt: unnamed`)
        g = torch.Generator().manual_seed(config.seed * 7 + 4)
        u = random_token_embeddings(self.pair.text_encoder_o, (len(self.prompts), k_max), g)
        width = torch.tensor(cycled(self.inv_widths, len(self.prompts)))  # (P,): the widths in turn
        with torch.no_grad():  # (P, L, D): each prompt with random vocabulary tokens u, original encoder
            self.unnamed_o = self.injected(torch.arange(len(self.prompts)), u, width, self.pair.text_encoder_o)
        self.removed_bank: TrajectoryBank | None = None  # cached x_t of the prompts without the concept word
        if config.removed_share > 0:
            self.removed_ids = token_ids(self.tokenizer, self.replaced_prompts([""])[0])  # the concept word deleted
            with torch.no_grad():  # (P, L, D): those prompts through the original encoder
                self.removed_o = encode(self.pair.text_encoder_o, self.removed_ids)

    @property
    def uses_inversion(self) -> bool:
        """Whether any row trains at a v*: without one (unnamed rows only) no inversion is learned."""
        return self.config.inversion_share > 0 or self.config.inversion_rows > 0

    def extra_state(self) -> dict[str, torch.nn.Module]:
        return {**super().extra_state(), "inversion_pool": self.pool}

    def invert(self, step: int) -> None:
        """Learn a new v* against the current model (the textual-inversion loss on the concept latents), afresh every
        `inversion_restart`-th time, else continuing from the newest v*: a chain of n inversions gives the model an
        attacker with n times the steps, one that tracks the model as it changes."""
        seed = self.config.seed * 1_000_003 + step
        n = int(self.pool.filled)
        k = self.inv_widths[n % len(self.inv_widths)]
        start = None if n % self.config.inversion_restart == 0 else self.pool.newest(k)
        inversion = self.config.inversion.model_copy(update={"k": k})
        emb, losses = learn(self.pipe, self.x0, inversion, seed, start=start)
        self.pool.push(emb)
        self.log["inversion"] = losses[-10:].mean().item()

    def unnamed(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """u (n, k_max, D): random vocabulary tokens plus N(0, (s * std)^2) with s ~ U(0, unnamed_noise) per row, std
        the token table's per-dimension std; the noise reaches embeddings between and around real tokens. And each
        row's width (n,), drawn uniformly from the inversion widths (a row uses its first width tokens)."""
        k = max(self.inv_widths)
        table = token_embedding(self.pair.text_encoder).weight.detach()
        u = random_token_embeddings(self.pair.text_encoder, (n, k), g)
        scale = torch.rand(n, 1, 1, generator=g) * self.config.unnamed_noise
        u = u + scale.to(u) * table.std(0) * torch.randn(u.shape, generator=g).to(u)
        width = torch.full((n,), k)
        if len(self.inv_widths) > 1:  # one width draws nothing, leaving g as it was
            width = torch.tensor(self.inv_widths)[torch.randint(len(self.inv_widths), (n,), generator=g)]
        return u, width

    def build_bank(self) -> None:
        """The concept and retain banks; with `unnamed_xt: unnamed`, also the original model's trajectories on the
        unnamed prompts (`unnamed_o`), two per prompt."""
        super().build_bank()
        if self.config.unnamed_xt == "unnamed":
            self.unnamed_bank = self.make_bank(self.unnamed_o, 2 * len(self.prompts), 4)
        if self.config.removed_share > 0:
            self.removed_bank = self.make_bank(self.removed_o, 2 * len(self.prompts), 5)

    def concept_rows(
        self, step: int, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """AdvUnlearn's rows (c* after warm-up), with a share at an inversion embedding v* and a share at a random
        embedding u in the concept word's place. The soft inner attack runs on every row, including those that then
        take v* or u: the c* it finds go back to the pool as warm starts, so each pool member is refreshed as often as
        in AdvUnlearn. With `unnamed_xt: unnamed` the u rows take x_t, t and their prompt from the unnamed bank, and
        the removed rows (`removed_share`) take them from the bank of the prompts without the concept word; eq. 2's
        target is then that prompt's, anchored as for every concept row."""
        cfg = self.config
        ctx = self.concept_context(step, x, t, prompt, g)
        if step < cfg.warmup:
            return x, t, prompt, ctx
        if self.uses_inversion and (step - cfg.warmup) % cfg.invert_every == 0:
            self.invert(step)
        x, t, prompt, ctx = self.shared_rows(x, t, prompt, ctx, g)
        if cfg.inversion_rows == 0:
            return x, t, prompt, ctx
        xe, te, pe = self.sample_xt(cfg.inversion_rows, g)
        member = self.pool_draw(len(pe), g)
        ce = self.injected(pe, self.pool.emb[member], self.pool.width[member]).to(ctx)
        cat = torch.cat
        return cat([x, xe.to(x)]), cat([t, te.to(t)]), cat([prompt, pe.to(prompt)]), cat([ctx, ce])

    def pool_draw(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n,) pool members drawn uniformly."""
        return torch.randint(self.pool.members(), (n,), generator=g)

    def injected(
        self, prompt: torch.Tensor, emb: torch.Tensor, width: torch.Tensor, encoder: CLIPTextModel | None = None
    ) -> torch.Tensor:
        """The context (n, L, D) of prompts `prompt` (n,) with the first width[i] rows of emb[i] (n, k_max, D) in
        the concept word's place, through `encoder` (default: the current one)."""
        encoder = encoder or self.pair.text_encoder

        def group(k: int, rows: torch.Tensor) -> torch.Tensor:
            slots, p = self.inv_slots[k], prompt[rows]
            return encode_injected(encoder, Slots(slots.ids[p], slots.positions[p], slots.mode), emb[rows, :k])

        return by_width(width, group)

    def shared_rows(
        self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor, ctx: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's rows re-drawn by share: inversion v*, unnamed u, removed word; the rest keep c*."""
        cfg = self.config
        draw = torch.rand(len(prompt), generator=g)
        inverted = draw < cfg.inversion_share
        unnamed = (draw >= cfg.inversion_share) & (draw < cfg.inversion_share + cfg.unnamed_share)
        edge = cfg.inversion_share + cfg.unnamed_share
        removed = (draw >= edge) & (draw < edge + cfg.removed_share)
        if removed.any():
            xr, tr, pr = self.sample_xt(int(removed.sum()), g, self.removed_bank, self.removed_o)
            x, t, prompt, ctx = x.clone(), t.clone(), prompt.clone(), ctx.clone()
            on = removed.to(x.device)
            x[on], t[on], prompt[removed] = xr.to(x), tr.to(t), pr.to(prompt)
            ctx[removed.to(ctx.device)] = encode(self.pair.text_encoder, self.removed_ids[pr]).to(ctx)
        if not (inverted.any() or unnamed.any()):
            return x, t, prompt, ctx
        emb = torch.zeros(len(prompt), *self.pool.emb.shape[1:])
        width = torch.zeros(len(prompt), dtype=torch.long)
        if inverted.any():  # an empty draw leaves g as it was, so skipping it changes no other row
            member = self.pool_draw(int(inverted.sum()), g)
            emb[inverted], width[inverted] = self.pool.emb[member], self.pool.width[member]
        if cfg.unnamed_xt == "unnamed" and unnamed.any():
            xu, tu, pu = self.sample_xt(int(unnamed.sum()), g, self.unnamed_bank, self.unnamed_o)
            x, t, prompt = x.clone(), t.clone(), prompt.clone()
            on = unnamed.to(x.device)
            x[on], t[on], prompt[unnamed] = xu.to(x), tu.to(t), pu.to(prompt)
        u, u_width = self.unnamed(int(unnamed.sum()), g)
        emb[unnamed], width[unnamed] = u.to(emb), u_width
        rows = inverted | unnamed
        ctx = ctx.clone()
        ctx[rows.to(ctx.device)] = self.injected(prompt[rows], emb[rows].to(ctx.device), width[rows]).to(ctx.dtype)
        return x, t, prompt, ctx


def stage1_config(config: RobustConfig) -> AdvUnlearnConfig:
    """Stage 1's config (an AdvUnlearnConfig, or a RobustConfig on the text encoder with `stage1_method: robust`):
    `stage1` over the shared concepts, prompts, retain prompts, anchor and seed (a key `stage1` sets wins, e.g. a
    stage-1 anchor of its own)."""
    if config.stage1_method == "robust":
        return RobustConfig.model_validate({**_shared(config), **config.stage1, "component": "text_encoder"})
    return AdvUnlearnConfig.model_validate({**_shared(config), **config.stage1})


def soft_pass_config(config: RobustConfig) -> AdvUnlearnConfig | None:
    """The soft-prefix pass's config (`stage1_soft` over the shared options, as stage 1), None without one."""
    if config.stage1_soft is None:
        return None
    return AdvUnlearnConfig.model_validate({**_shared(config), **config.stage1_soft})


def _shared(config: RobustConfig) -> dict:
    """The options every stage takes from the top of the recipe unless its own dict sets them."""
    return {k: getattr(config, k) for k in SHARED_OPTIONS}


def reusable(folder: Path, config: AdvUnlearnConfig, after: str = "") -> bool:
    """Whether `folder` holds a finished run of `config` that started from the run whose hash is `after`."""
    done = folder / "erasekit.json"
    if not done.is_file():
        return False
    info = json.loads(done.read_text())
    return info.get("config_sha256") == config_hash(config) and info.get("after_sha256", "") == after


def original_images(pipe: StableDiffusionPipeline, prompts: list[str], n: int = 16) -> torch.Tensor:
    """(n, 3, H, W): the unmodified model's images of the training prompts (cycled), at seeds 10,000 + i, which no
    evaluation set uses."""
    rows = [prompts[i % len(prompts)] for i in range(n)]
    return generate(pipe, rows, [10_000 + i for i in range(n)], batch_size=4)


def erase(
    pipe: StableDiffusionPipeline,
    config: RobustConfig,
    output: Path,
    concept_images: torch.Tensor | None = None,
    progress: bool = True,
    dtype: torch.dtype | None = None,
) -> dict:
    """Run both stages on `pipe` (changed in place) into `output` (stage 1 in output/stage1, reused when done);
    `concept_images` (N, 3, H, W) in [0, 1] show the concept for the inversion inner attacks (a domain's renderer);
    None: the unmodified model draws them from the training prompts. Returns a summary."""
    output = Path(output)
    if concept_images is None:
        concept_images = original_images(pipe, config.prompts or config.concepts)
    original_te = copy.deepcopy(pipe.text_encoder).requires_grad_(False).eval()
    banks = BankCache()  # every stage's eq. 2 targets come from the original model: equal banks are built once
    first, soft = stage1_config(config), soft_pass_config(config)
    if reusable(output / "stage1", first):
        trained = type(pipe.text_encoder).from_pretrained(output / "stage1" / "text_encoder")
        pipe.text_encoder.load_state_dict(trained.state_dict())
        stage1 = {**json.loads((output / "stage1" / "erasekit.json").read_text()), "reused": True}
    elif isinstance(first, RobustConfig):
        stage1 = RobustTrainer(pipe, first, original_te, concept_images, dtype, banks).run(
            output / "stage1", progress=progress
        )
    else:
        stage1 = AdvUnlearnTrainer(pipe, first, dtype, banks=banks).run(output / "stage1", progress=progress)
    encoder = output / "stage1"
    if soft is not None:
        encoder = output / "stage1_soft"
        if reusable(encoder, soft, after=config_hash(first)):
            trained = type(pipe.text_encoder).from_pretrained(encoder / "text_encoder")
            pipe.text_encoder.load_state_dict(trained.state_dict())
            passed = json.loads((encoder / "erasekit.json").read_text())
        else:
            passed = AdvUnlearnTrainer(pipe, soft, dtype, original_te, banks).run(encoder, progress=progress)
            info = json.loads((encoder / "erasekit.json").read_text())
            (encoder / "erasekit.json").write_text(json.dumps({**info, "after_sha256": config_hash(first)}, indent=1))
        stage1 = {k: stage1.get(k, 0) + passed.get(k, 0) for k in ("seconds", "unet_calls", "unet_rows")}
    pipe.text_encoder.requires_grad_(False).eval()
    stage2 = RobustTrainer(pipe, config, original_te, concept_images, dtype, banks).run(output, progress=progress)
    shutil.copytree(encoder / "text_encoder", output / "text_encoder", dirs_exist_ok=True)
    summary = {
        **stage2,
        "component": "text_encoder+unet",
        "stage1": {k: stage1.get(k) for k in STAGE_KEYS},
        "unet_calls": stage1.get("unet_calls", 0) + stage2["unet_calls"],
        "unet_rows": stage1.get("unet_rows", 0) + stage2["unet_rows"],
        "seconds": round(stage1.get("seconds", 0) + stage2["seconds"], 2),
    }
    info = {**summary, "config": config.model_dump(), "config_sha256": config_hash(config)}
    (output / "erasekit.json").write_text(json.dumps(info, indent=1, default=str))
    return summary


__all__ = ["RobustConfig", "RobustTrainer", "erase"]
