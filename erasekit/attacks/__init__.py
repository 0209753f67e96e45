"""Attacks that try to bring an erased concept back, the verdict on whether they did, and their transfer.

Entry points (for the CLI and the evaluation code):

    run_attack(pipe, original, prompts, seeds, kind, config, concept, progress, detector, vocabulary,
               concept_images) -> AttackOutcomes (a list of AttackOutcome with the run's `card`)
        pipe      the changed pipeline (erased text encoder / UNet / ItD patch attached), used to generate
        original  the original component(s): {"text_encoder": module} and/or {"unet": module} (frozen copies,
                  e.g. from erasekit.artifact.load_original_component), or a whole original pipeline; what is
                  not given is taken from `pipe`
        kind      one of ATTACKS:
                  "soft"        k continuous embeddings per prompt (eq. 4), white-box
                  "token"       k real tokens per prompt (UnlearnDiffAtk), white-box
                  "inversion"   k embeddings learned once on `concept_images` through the erased model (CCE);
                                with `restarts` R, R of them, each prompt keeping the first that works
                  "ring-a-bell" k real tokens per prompt that move the ORIGINAL encoder's output along the
                                concept direction (Ring-A-Bell), model-agnostic
        Soft and token attack each prompt on its own, on the original model's DDIM trajectory for
        (prompts[i], seeds[i]) (the same noise its image is generated from, as UnlearnDiffAtk does). Every image
        (before, after, early-stop checks) is drawn with DDIM from the pipeline's scheduler config
        (attacks.sampling), the sampler the soft and token attacks optimise on; the card says so.
        vocabulary  the token / ring-a-bell search space: a domain's word list (single tokens kept), or None for
                  every whole-word token of the tokenizer (UnlearnDiffAtk's space)

    judge(outcomes, detector) -> dict: ASR as UnlearnDiffAtk defines it, pre / post rates, the detector's card
    save_outcomes(outcomes, folder) / replay(pipe, folder, sample_steps, guidance): transfer to another model
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from diffusers import StableDiffusionPipeline
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from erasekit.attacks import inversion, ring_a_bell
from erasekit.attacks.inversion import InversionConfig
from erasekit.attacks.outcome import AttackOutcome, AttackOutcomes, judge, marked_prompt, unattacked
from erasekit.attacks.ring_a_bell import RingABellConfig
from erasekit.attacks.sampling import Sampling, ddim_sampling, draw_embedded, draw_injected, draw_prompts, sampler_card
from erasekit.attacks.soft import SoftAttackConfig, attack_loss, optimize_embeddings
from erasekit.attacks.token import TokenAttackConfig, optimize_tokens, search_space, space_card
from erasekit.attacks.transfer import replay, save_outcomes
from erasekit.diffusion import ModelPair, TrajectoryBank
from erasekit.errors import ErasekitError
from erasekit.text import (
    Slots,
    build_slots,
    check_prompts,
    encode,
    random_token_embeddings,
    slot_prompt,
    token_embedding,
    token_ids,
)

__all__ = [
    "ATTACKS",
    "AttackConfig",
    "AttackOutcome",
    "AttackOutcomes",
    "InversionConfig",
    "RingABellConfig",
    "SoftAttackConfig",
    "TokenAttackConfig",
    "judge",
    "replay",
    "run_attack",
    "save_outcomes",
]

ATTACKS = ("soft", "token", "inversion", "ring-a-bell")
RESTART_SEED = 100_003  # seed offset of an inversion restart (restart 0 = the attack seed itself)
SCORE_DRAWS = 4  # fixed trajectory points that rank restarts: eq. 4 on one random point is too noisy to compare
Detector = Callable[[torch.Tensor], torch.Tensor]


class AttackConfig(BaseModel):
    """Options of one attack run: each kind's own options plus sampling (the evaluation's steps and guidance)."""

    model_config = ConfigDict(extra="forbid")

    soft: SoftAttackConfig = SoftAttackConfig()
    token: TokenAttackConfig = TokenAttackConfig()
    inversion: InversionConfig = InversionConfig()
    ring_a_bell: RingABellConfig = RingABellConfig()
    sample_steps: int = Field(25, ge=2)
    guidance: float = 5.0
    batch_size: int = Field(32, ge=1)  # prompts attacked together (each with its own candidates), images per call
    seed: int = 0
    # UnlearnDiffAtk's early stop (soft, token): every N optimisation steps draw each prompt's image with the
    # current candidate and keep the first that the detector flags (0: judge only the final candidate).
    check_every: int = Field(25, ge=0)
    # soft, token: each prompt is attacked from this many random starts and keeps its best (first flagged, else
    # lowest eq. 4 on SCORE_DRAWS fixed trajectory points); inversion: this many embeddings learned (see
    # _prepare_inversion)
    restarts: int = Field(1, ge=1)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.sample_steps, self.guidance, self.batch_size)

    def options(self, kind: str) -> BaseModel:
        """The options of attack `kind`."""
        return getattr(self, kind.replace("-", "_"))


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


def _bank(pair: ModelPair, pipe, prompts: list[str], seeds: list[int], config: AttackConfig) -> TrajectoryBank:
    """The original model's DDIM trajectory for each (prompt, seed): the noise `generate` starts from."""
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noise = torch.cat([torch.randn(1, *shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    with torch.no_grad():
        ctx = encode(pair.text_encoder_o, token_ids(pipe.tokenizer, prompts))
        null = encode(pair.text_encoder_o, token_ids(pipe.tokenizer, [""]))
    return TrajectoryBank(
        pair, pipe.scheduler, ctx, null, noise, prompt=torch.arange(len(seeds)), steps=config.sample_steps,
        guidance=config.guidance,
    )  # fmt: skip


def _provider(bank: TrajectoryBank, rows: torch.Tensor):
    """Each call: one random trajectory point per prompt in `rows`, with the original's conditional eps as the target.
    Steps are drawn for every bank row and then indexed, so a prompt's draw does not depend on which rows are active."""

    def draw(g: torch.Generator):
        step = torch.randint(bank.steps, (len(bank.latents),), generator=g)[rows]
        return bank.latents[rows, step], bank.taus[step], bank.eps_cond[rows, step]

    return draw


@torch.no_grad()
def _score(pair: ModelPair, slots: Slots, emb: torch.Tensor, provider) -> torch.Tensor:
    """Eq. 4 per prompt (B,) averaged over SCORE_DRAWS fixed trajectory points (seeds 0.., as the token selection)."""
    total = sum(attack_loss(pair, slots, emb, *provider(torch.Generator().manual_seed(i))) for i in range(SCORE_DRAWS))
    return (total / SCORE_DRAWS).cpu()


class _Optimised:
    """Soft / token attack of one chunk of prompts with restarts and the early-stop checks (state across restarts)."""

    def __init__(self, pipe, pair, kind, config, concept, detector, allowed, prompts, seeds, before) -> None:
        self.pipe, self.pair, self.kind, self.config, self.concept = pipe, pair, kind, config, concept
        self.detector, self.allowed, self.prompts, self.seeds, self.before = detector, allowed, prompts, seeds, before
        self.opts = config.options(kind)
        self.slots = build_slots(pipe.tokenizer, prompts, self.opts.mode, self.opts.k, concept)
        self.flagged = torch.zeros(len(prompts), dtype=torch.bool)
        self.flag_images: dict[int, torch.Tensor] = {}

    def sub_slots(self, rows: torch.Tensor) -> Slots:
        return Slots(self.slots.ids[rows], self.slots.positions[rows], self.slots.mode)

    def texts(self, rows: torch.Tensor, chosen: torch.Tensor) -> list[str]:
        """The readable prompts of token ids chosen (n, k) for prompts `rows`."""
        return [
            slot_prompt(self.pipe.tokenizer, self.prompts[i], c.tolist(), self.opts.mode, self.concept)
            for i, c in zip(rows.tolist(), chosen, strict=True)
        ]

    def draw(self, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) of prompts `rows` with their candidates (soft: (n, k, D); token: ids (n, k))."""
        seeds = [self.seeds[i] for i in rows.tolist()]
        if self.kind == "soft":
            return draw_injected(self.pipe, self.sub_slots(rows), candidates, seeds, self.config.sampling)
        return draw_prompts(self.pipe, self.texts(rows, candidates), seeds, self.config.sampling)

    def check(self, active: torch.Tensor, candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The detector's verdict on candidates of active[rows]; flagged images are kept for the outcome."""
        chunk_rows = active[rows]
        images = self.draw(chunk_rows, candidates)
        hit = self.detector(images).cpu().bool()
        for i, img in zip(chunk_rows[hit].tolist(), images[hit], strict=True):
            self.flag_images[i] = img
        self.flagged[chunk_rows[hit]] = True
        return hit

    def soft_start(self, rows: torch.Tensor, restart: int, g: torch.Generator) -> torch.Tensor:
        """(n, k, D): random real tokens' embeddings; in add mode zero first, then the offset that turns each
        concept token into a random real token."""
        te, k = self.pipe.text_encoder, self.slots.k
        if self.opts.mode != "add":
            return random_token_embeddings(te, (len(rows), k), g)
        if restart == 0:
            return torch.zeros(len(rows), k, te.config.hidden_size, device=te.device)
        table = token_embedding(te).weight.detach()
        own = self.slots.ids[rows].gather(1, self.slots.positions[rows])
        return random_token_embeddings(te, (len(rows), k), g) - table[own.to(table.device)]

    def run(self, g: torch.Generator) -> list[AttackOutcome]:
        n = len(self.prompts)
        bank = _bank(self.pair, self.pipe, self.prompts, self.seeds, self.config)
        every = self.config.check_every if self.detector is not None else 0
        table = token_embedding(self.pair.text_encoder).weight.detach()
        best: list[torch.Tensor | None] = [None] * n
        best_loss = torch.full((n,), float("inf"))
        active = torch.arange(n)
        for restart in range(self.config.restarts):
            slots, provider = self.sub_slots(active), _provider(bank, active)
            check = partial(self.check, active) if every else None
            if self.kind == "soft":
                start = self.soft_start(active, restart, g)
                found, _ = optimize_embeddings(self.pair, slots, start, provider, self.opts, g, check, every)
                score = _score(self.pair, slots, found, provider)
            else:
                found, _ = optimize_tokens(self.pair, slots, self.allowed, provider, self.opts, g, check, every)
                score = _score(self.pair, slots, table[found.to(table.device)], provider)
            newly = self.flagged[active]
            for j in (newly | (score < best_loss[active])).nonzero().squeeze(1).tolist():
                best[active[j]], best_loss[active[j]] = found[j].detach().cpu(), score[j]
            active = active[~newly]
            if not len(active):
                break
        cands = torch.stack(best)
        rest = (~self.flagged).nonzero().squeeze(1)
        after = dict(zip(rest.tolist(), self.draw(rest, cands[rest]) if len(rest) else [], strict=True))
        after.update(self.flag_images)
        if self.kind == "soft":
            texts = [marked_prompt(p, self.opts.mode, self.slots.k, self.concept) for p in self.prompts]
        else:
            texts = self.texts(torch.arange(n), cands)
        pieces = [None] * n if self.kind == "soft" else [_pieces(self.pipe.tokenizer, c) for c in cands]
        return [
            AttackOutcome(
                p,
                s,
                self.kind,
                texts[i],
                best_loss[i].item(),
                self.before[i],
                after[i],
                tokens=pieces[i],
                embeddings=cands[i] if self.kind == "soft" else None,
                mode=self.opts.mode,
            )  # fmt: skip
            for i, (p, s) in enumerate(zip(self.prompts, self.seeds, strict=True))
        ]


def _pieces(tokenizer, ids: torch.Tensor) -> list[str]:
    return [w.removesuffix("</w>") for w in tokenizer.convert_ids_to_tokens(ids.tolist())]


def _prepare_optimised(kind, pipe, pair, config, concept, detector, vocabulary, g) -> tuple[Callable, dict]:
    """Soft / token: the per-chunk attack and what the card adds."""
    allowed = search_space(pipe.tokenizer, vocabulary, [concept] if concept else []) if kind == "token" else []
    every = config.check_every if detector is not None else 0

    def attack(prompts: list[str], seeds: list[int], before: torch.Tensor) -> list[AttackOutcome]:
        return _Optimised(pipe, pair, kind, config, concept, detector, allowed, prompts, seeds, before).run(g)

    extra = {
        "restarts": config.restarts,
        "check_every": every,  # early stop on the detector's verdict (UnlearnDiffAtk); 0 = off
        "reference": "original model's DDIM trajectory per (prompt, seed), eq. 4",
    }
    if kind == "token":
        extra["search_space"] = space_card(vocabulary, allowed)
    return attack, extra


def _prepare_inversion(pipe, config, concept, concept_images, detector, bar: Progress) -> tuple[Callable, dict]:
    """Inversion: learn the embeddings once (CCE), then put them in every prompt. With `restarts` R > 1, R
    embeddings are learned from seeds seed + RESTART_SEED * r; a prompt keeps the first whose image the detector
    flags (the soft / token attacks' rule), else the first; without a detector every prompt takes the embeddings of
    the lowest final loss."""
    if concept_images is None:
        raise ErasekitError(
            "the inversion attack needs images of the concept: pass concept_images (N, 3, H, W) in [0, 1]"
        )
    opts = config.inversion
    x0 = inversion.concept_latents(pipe, concept_images)
    tail = max(1, opts.steps // 10)  # one step's loss on batch_size random draws is noisy: report a mean
    learned = [inversion.learn(pipe, x0, opts, config.seed + RESTART_SEED * r, bar) for r in range(config.restarts)]
    embs = [emb for emb, _ in learned]
    finals = [losses[-tail:].mean().item() for _, losses in learned]
    if detector is None:
        best = min(range(len(embs)), key=finals.__getitem__)
        embs, finals = [embs[best]], [finals[best]]

    def attack(prompts: list[str], seeds: list[int], before: torch.Tensor) -> list[AttackOutcome]:
        modes = [inversion.placement(pipe.tokenizer, p, concept) for p in prompts]
        pick = [0] * len(prompts)
        after = draw_embedded(pipe, prompts, seeds, [embs[0]] * len(prompts), modes, concept, config.sampling)
        for r in range(1, len(embs)):
            todo = [i for i, hit in enumerate(detector(after).cpu().bool().tolist()) if not hit]
            if not todo:
                break
            again = draw_embedded(
                pipe, [prompts[i] for i in todo], [seeds[i] for i in todo], [embs[r]] * len(todo),
                [modes[i] for i in todo], concept, config.sampling,
            )  # fmt: skip
            for j, i in enumerate(todo):
                after[i], pick[i] = again[j], r
        return [
            AttackOutcome(p, s, "inversion", marked_prompt(p, m, opts.k, concept), finals[r], before[i], after[i],
                          embeddings=embs[r], mode=m)
            for i, (p, s, m, r) in enumerate(zip(prompts, seeds, modes, pick, strict=True))
        ]  # fmt: skip

    extra = {
        "images": len(concept_images),
        "loss_first": learned[0][1][:tail].mean().item(),
        "loss_last": finals[0],
        "restarts": config.restarts,
        "restart_rule": "first restart whose image the detector flags, per prompt"
        if detector is not None
        else "the restart of the lowest final loss, for every prompt",
        "learned": "once for the whole prompt set, through the erased model, then applied to every prompt",
        "placement": "replace_k where the prompt names the concept, else prefix_k",
        "check_every": "does not apply (nothing is optimised per prompt)",
    }
    return attack, extra


def _prepare_ring_a_bell(pipe, pair, prompts, config, concept, vocabulary, g) -> tuple[Callable, dict]:
    """Ring-A-Bell: the concept direction on the reference encoder once, then a genetic search per prompt."""
    opts, tok, reference = config.ring_a_bell, pipe.tokenizer, pair.text_encoder_o
    if concept is None and not opts.pairs:
        raise ErasekitError("ring-a-bell needs the concept (to build prompt pairs) or ring_a_bell.pairs")
    pairs = [tuple(x) for x in opts.pairs] or ring_a_bell.concept_pairs(prompts, concept, opts.templates)
    direction = ring_a_bell.concept_direction(reference, tok, pairs)
    allowed = search_space(tok, vocabulary, [concept] if concept else [])

    def base(p: str) -> str:
        return ring_a_bell.without_concept(p, concept) if concept else p

    k = opts.k or ring_a_bell.default_k(tok, [base(p) for p in prompts])

    def attack(ps: list[str], seeds: list[int], before: torch.Tensor) -> list[AttackOutcome]:
        bases = [base(p) for p in ps]
        with torch.no_grad():
            targets = encode(reference, token_ids(tok, bases)).float() + opts.eta * direction
        ids, loss = ring_a_bell.search(reference, tok, bases, targets, allowed, k, opts, g)
        texts = [slot_prompt(tok, b, c.tolist(), "suffix_k", None) for b, c in zip(bases, ids, strict=True)]
        after = draw_prompts(pipe, texts, seeds, config.sampling)
        return [
            AttackOutcome(p, s, "ring-a-bell", texts[i], loss[i].item(), before[i], after[i],
                          tokens=_pieces(tok, ids[i]), mode="suffix_k")
            for i, (p, s) in enumerate(zip(ps, seeds, strict=True))
        ]  # fmt: skip

    own = reference is pipe.text_encoder
    extra = {
        "pairs": len(pairs),
        "k": k,
        "direction_norm": direction.norm().item(),
        "search_space": space_card(vocabulary, allowed),
        "reference_encoder": "the attacked pipeline's own (no original given)" if own else "the original text encoder",
        "check_every": "does not apply (the search never draws an image)",
        "restarts": "does not apply",
    }
    return attack, extra


def run_attack(
    pipe: StableDiffusionPipeline,
    original: StableDiffusionPipeline | dict | None,
    prompts: list[str],
    seeds: list[int],
    kind: str,
    config: AttackConfig | None = None,
    concept: str | None = None,
    progress: bool = False,
    detector: Detector | None = None,
    vocabulary: list[str] | None = None,
    concept_images: torch.Tensor | None = None,
) -> AttackOutcomes:
    """Attack each prompt (see the module docstring); `concept` is needed for replace_k / add, the token ban, the
    inversion's placement and ring-a-bell's prompt pairs.

    `detector` (images (B, 3, H, W) -> (B,) bool) makes it follow UnlearnDiffAtk: prompts whose unattacked image is
    already flagged are not attacked (`attacked=False`), and soft / token attacks stop early at the first check
    (every `config.check_every` steps) whose image is flagged. Without it every prompt is attacked in full.
    `concept_images` (N, 3, H, W) in [0, 1]: the inversion attack's training images (from the original model or a
    domain's renderer).
    """
    config = config or AttackConfig()
    if kind not in ATTACKS:
        raise ErasekitError(f"unknown attack '{kind}': use one of {', '.join(ATTACKS)}")
    check_prompts(pipe.tokenizer, prompts)
    if len(seeds) != len(prompts):
        raise ErasekitError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    pair = model_pair(pipe, original)
    g = torch.Generator().manual_seed(config.seed)
    out: list[AttackOutcome] = []
    with ddim_sampling(pipe) as replaced, Progress(disable=not progress, transient=True) as bar:
        card = {
            "kind": kind, "prompts": len(prompts), "concept": concept, "options": config.options(kind).model_dump(),
            "sampler": sampler_card(pipe, config.sampling, replaced), "seed": config.seed,
        }  # fmt: skip
        if kind == "inversion":
            attack, extra = _prepare_inversion(pipe, config, concept, concept_images, detector, bar)
        elif kind == "ring-a-bell":
            attack, extra = _prepare_ring_a_bell(pipe, pair, prompts, config, concept, vocabulary, g)
        else:
            attack, extra = _prepare_optimised(kind, pipe, pair, config, concept, detector, vocabulary, g)
        card.update(extra)
        task = bar.add_task(f"{kind} attack", total=len(prompts))
        for i in range(0, len(prompts), config.batch_size):
            ps, ss = prompts[i : i + config.batch_size], seeds[i : i + config.batch_size]
            before = draw_prompts(pipe, ps, ss, config.sampling)
            done = detector(before).cpu().bool() if detector is not None else torch.zeros(len(ps), dtype=torch.bool)
            todo = [j for j in range(len(ps)) if not done[j]]
            attacked = iter(attack([ps[j] for j in todo], [ss[j] for j in todo], before[todo]) if todo else [])
            out += [
                unattacked(p, s, kind, before[j]) if done[j] else next(attacked) for j, (p, s) in enumerate(zip(ps, ss))
            ]
            bar.update(task, advance=len(ps))
    return AttackOutcomes(out, card)
