"""Attacks that try to bring an erased concept back, and the classifier check of whether they did.

Entry points (for the CLI and the evaluation code):

    run_attack(pipe, original, prompts, seeds, kind, config, concept) -> list[AttackOutcome]
        pipe      the changed pipeline (erased text encoder / UNet / ItD patch attached), used to generate
        original  the original component(s): {"text_encoder": module} and/or {"unet": module} (frozen copies,
                  e.g. from erasekit.artifact.load_original_component), or a whole original pipeline; what is
                  not given is taken from `pipe`
        kind      "soft" (k continuous embeddings, eq. 4) or "token" (k real tokens, UnlearnDiffAtk style)
        Each prompt i is attacked on its own, on the original model's DDIM trajectory for (prompts[i], seeds[i])
        (the same noise its image is generated from, as UnlearnDiffAtk does); the outcome holds the images of
        that seed before and after the attack.

    success_check(outcomes, concept, model="shapes") -> dict
        Judges every before/after image with erasekit.eval.classifiers.make_detector and returns the ASR as
        UnlearnDiffAtk defines it (erasekit.eval.metrics.asr) with the pre-attack rate and the detector's card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers import StableDiffusionPipeline
from pydantic import BaseModel, Field
from rich.progress import Progress

from erasekit.attacks.soft import SoftAttackConfig, optimize_embeddings
from erasekit.attacks.token import TokenAttackConfig, optimize_tokens, search_space
from erasekit.diffusion import ModelPair, TrajectoryBank
from erasekit.errors import ErasekitError
from erasekit.generation import generate
from erasekit.text import (
    build_slots,
    check_prompts,
    encode,
    encode_injected,
    random_token_embeddings,
    slot_prompt,
    token_ids,
)

__all__ = [
    "AttackConfig",
    "AttackOutcome",
    "SoftAttackConfig",
    "TokenAttackConfig",
    "run_attack",
    "success_check",
]


class AttackConfig(BaseModel):
    """Options of one attack run: the kind's own options plus sampling (the evaluation's steps and guidance)."""

    soft: SoftAttackConfig = SoftAttackConfig()
    token: TokenAttackConfig = TokenAttackConfig()
    sample_steps: int = Field(25, ge=2)
    guidance: float = 5.0
    batch_size: int = Field(32, ge=1)  # prompts attacked together (each with its own embeddings)
    seed: int = 0
    # UnlearnDiffAtk's early stop: every N optimisation steps draw each prompt's image with the current candidate
    # and keep the first that the detector flags (0: judge only the final candidate). Needs a detector.
    check_every: int = Field(25, ge=0)


@dataclass
class AttackOutcome:
    """One attacked prompt.

    adversarial_prompt: the readable prompt (token attack) or the prompt with `<adv>` marking the k soft slots.
    tokens: the chosen tokens as text pieces (token attack), else None.
    embeddings: (k, D) the soft embeddings (soft attack), else None.
    image_before / image_after: (3, H, W) in [0, 1], same seed.
    attacked: False when the detector already flagged the unattacked image (UnlearnDiffAtk then counts the prompt
    as a success without attacking it; the "after" image is the "before" one and the loss is 0).
    """

    prompt: str
    seed: int
    kind: str
    adversarial_prompt: str
    loss: float
    image_before: torch.Tensor
    image_after: torch.Tensor
    tokens: list[str] | None = None
    embeddings: torch.Tensor | None = field(default=None, repr=False)
    attacked: bool = True


def model_pair(pipe: StableDiffusionPipeline, original: StableDiffusionPipeline | dict | None) -> ModelPair:
    """theta = pipe's components; theta_o = the given originals, falling back to pipe's own."""
    if isinstance(original, StableDiffusionPipeline):
        original = {"text_encoder": original.text_encoder, "unet": original.unet}
    original = original or {}
    unknown = set(original) - {"text_encoder", "unet"}
    if unknown:
        raise ErasekitError(f"original components must be text_encoder and/or unet, not {sorted(unknown)}")
    return ModelPair(
        pipe.unet, pipe.text_encoder, original.get("unet", pipe.unet), original.get("text_encoder", pipe.text_encoder)
    )


def _bank(pair: ModelPair, pipe, ids: torch.Tensor, seeds: list[int], config: AttackConfig) -> TrajectoryBank:
    """The original model's sampling trajectory for each (prompt, seed): the noise `generate` starts from."""
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noise = torch.cat([torch.randn(1, *shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    with torch.no_grad():
        ctx = encode(pair.text_encoder_o, ids)
        null = encode(pair.text_encoder_o, token_ids(pipe.tokenizer, [""]))
    return TrajectoryBank(
        pair, pipe.scheduler, ctx, null, noise, torch.arange(len(seeds)), config.sample_steps, config.guidance
    )


def _provider(bank: TrajectoryBank):
    """Each call: one random trajectory point per prompt, with the original's conditional eps as the target."""
    rows = torch.arange(len(bank.latents))

    def draw(g: torch.Generator):
        step = torch.randint(bank.steps, (len(rows),), generator=g)
        return bank.latents[rows, step], bank.taus[step], bank.eps_cond[rows, step]

    return draw


@torch.no_grad()
def _generate_from_context(pipe, ctx: torch.Tensor, seeds: list[int], config: AttackConfig) -> torch.Tensor:
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    out = pipe(
        prompt_embeds=ctx, num_inference_steps=config.sample_steps, guidance_scale=config.guidance,
        generator=gens, output_type="pt",
    )  # fmt: skip
    return out.images.float().cpu()


def _pieces(tokenizer, ids: torch.Tensor) -> list[str]:
    return [w.removesuffix("</w>") for w in tokenizer.convert_ids_to_tokens(ids.tolist())]


def _soft_text(prompt: str, mode: str, k: int, concept: str | None) -> str:
    """The prompt with `<adv>` marking where the soft embeddings went."""
    if mode == "prefix_k":
        return "<adv>" * k + " " + prompt
    if mode == "replace_k":
        return prompt.replace(concept or "", "<adv>" * k, 1)
    return prompt.replace(concept or "", f"{concept}<+adv>", 1)


def _attack_chunk(
    pipe: StableDiffusionPipeline,
    pair: ModelPair,
    prompts: list[str],
    seeds: list[int],
    kind: str,
    config: AttackConfig,
    concept: str | None,
    g: torch.Generator,
    detector: Callable[[torch.Tensor], torch.Tensor] | None,
    before: torch.Tensor,
) -> list[AttackOutcome]:
    """Attack `prompts` (their unattacked images `before` (B, 3, H, W) given)."""
    opts = config.soft if kind == "soft" else config.token
    slots = build_slots(pipe.tokenizer, prompts, opts.mode, opts.k, concept)
    provider = _provider(_bank(pair, pipe, token_ids(pipe.tokenizer, prompts), seeds, config))
    every = config.check_every if detector is not None else 0
    if kind == "soft":
        if opts.mode == "add":
            init = torch.zeros(len(prompts), slots.k, pipe.text_encoder.config.hidden_size, device=pipe.device)
        else:
            init = random_token_embeddings(pipe.text_encoder, (len(prompts), slots.k), g)

        def draw_soft(emb: torch.Tensor) -> torch.Tensor:  # (B, k, D) -> (B, 3, H, W)
            with torch.no_grad():
                ctx = encode_injected(pipe.text_encoder, slots, emb.to(pipe.device))
                return _generate_from_context(pipe, ctx, seeds, config)

        check = (lambda emb: detector(draw_soft(emb))) if every else None
        emb, loss = optimize_embeddings(pair, slots, init, provider, opts, g, check, every)
        after = draw_soft(emb)
        texts = [_soft_text(p, opts.mode, slots.k, concept) for p in prompts]
        return [
            AttackOutcome(p, s, kind, txt, loss[i].item(), before[i], after[i], embeddings=emb[i])
            for i, (p, s, txt) in enumerate(zip(prompts, seeds, texts, strict=True))
        ]
    allowed = search_space(pipe.tokenizer, opts.vocab, [concept] if concept else [])

    def texts_of(chosen: torch.Tensor) -> list[str]:  # (B, k) token ids -> the readable prompts
        return [
            slot_prompt(pipe.tokenizer, p, c.tolist(), opts.mode, concept) for p, c in zip(prompts, chosen, strict=True)
        ]

    def draw_tokens(chosen: torch.Tensor) -> torch.Tensor:
        return generate(pipe, texts_of(chosen), seeds, steps=config.sample_steps, guidance=config.guidance)

    check = (lambda chosen: detector(draw_tokens(chosen))) if every else None
    chosen, loss = optimize_tokens(pair, slots, allowed, provider, opts, g, check, every)
    texts = texts_of(chosen)
    after = draw_tokens(chosen)
    return [
        AttackOutcome(p, s, kind, txt, loss[i].item(), before[i], after[i], tokens=_pieces(pipe.tokenizer, chosen[i]))
        for i, (p, s, txt) in enumerate(zip(prompts, seeds, texts, strict=True))
    ]


def run_attack(
    pipe: StableDiffusionPipeline,
    original: StableDiffusionPipeline | dict | None,
    prompts: list[str],
    seeds: list[int],
    kind: Literal["soft", "token"],
    config: AttackConfig | None = None,
    concept: str | None = None,
    progress: bool = False,
    detector: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[AttackOutcome]:
    """Attack each prompt (see the module docstring); `concept` is needed for replace_k / add and the token ban.

    `detector` (images (B, 3, H, W) -> (B,) bool, e.g. `make_detector(concept)`) makes it follow UnlearnDiffAtk:
    prompts whose unattacked image is already flagged are not attacked (`attacked=False`), and the others stop
    early at the first check (every `config.check_every` steps) whose image is flagged. Without it every prompt is
    attacked for all steps and only the final candidates are drawn.
    """
    config = config or AttackConfig()
    if kind not in ("soft", "token"):
        raise ErasekitError(f"unknown attack '{kind}': use soft or token")
    opts = config.soft if kind == "soft" else config.token
    check_prompts(pipe.tokenizer, prompts, reserve=opts.k if opts.mode != "add" else 0)
    if len(seeds) != len(prompts):
        raise ErasekitError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    pair = model_pair(pipe, original)
    g = torch.Generator().manual_seed(config.seed)
    out: list[AttackOutcome] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{kind} attack", total=len(prompts))
        for i in range(0, len(prompts), config.batch_size):
            ps, ss = prompts[i : i + config.batch_size], seeds[i : i + config.batch_size]
            before = generate(pipe, ps, ss, steps=config.sample_steps, guidance=config.guidance)
            done = detector(before).cpu() if detector is not None else torch.zeros(len(ps), dtype=torch.bool)
            todo = [j for j in range(len(ps)) if not done[j]]
            attacked = iter(
                _attack_chunk(pipe, pair, [ps[j] for j in todo], [ss[j] for j in todo], kind, config, concept, g,
                              detector, before[todo])
                if todo else []
            )  # fmt: skip
            for j, (p, s) in enumerate(zip(ps, ss, strict=True)):
                out.append(
                    AttackOutcome(p, s, kind, p, 0.0, before[j], before[j], attacked=False)
                    if done[j]
                    else next(attacked)
                )
            bar.update(task, advance=len(ps))
    return out


def success_check(outcomes: list[AttackOutcome], concept: str, model: str = "shapes") -> dict:
    """ASR (UnlearnDiffAtk) of the outcomes, the pre-/post-attack rates, per-prompt pre/post and the detector's card."""
    from erasekit.eval.classifiers import make_detector
    from erasekit.eval.metrics import asr

    if not outcomes:
        raise ErasekitError("no attack outcomes to check: attack at least one prompt")
    detector = make_detector(concept, preset=None, model=model)
    pre = detector(torch.stack([o.image_before for o in outcomes]))
    post = detector(torch.stack([o.image_after for o in outcomes]))
    result = asr(pre.tolist(), post.tolist())
    result["post_attack_rate"] = post.float().mean().item()
    result["pre"], result["post"] = pre.tolist(), post.tolist()
    result["detector"] = detector.card()
    return result
