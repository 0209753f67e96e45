"""`evaluate`: generate, detect, attack and score one (possibly erased) pipeline under a recorded protocol.

    EvalConfig            every knob of an evaluation (YAML keys and CLI flags share these names)
    EvalPlan              what a domain hands in for one concept: prompt sets, detector, scorers, FID reference
    evaluate(cfg, pipe, original, plan, model_card) -> EvalResult(card, metrics, images)

Nothing here knows a domain: the shapes world and Stable Diffusion differ only in the EvalPlan their domain
builds (`erasekit.domains`). Sets: "target" (prompts naming the concept: pre-attack rate and the attacks),
"retain" (other concepts: retained accuracy), "world" (FID against the plan's reference images, CLIP score).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field

from erasekit.diffusion import UnetCounter
from erasekit.eval.attack_adapter import attack_set
from erasekit.eval.distributed import map_in_order
from erasekit.eval.metrics import asr, fid_from_features, rate
from erasekit.eval.protocol import protocol_card, sampler_card
from erasekit.generation import generate
from erasekit.prompts import PromptSet, set_card

ATTACK_KINDS = ("soft", "token", "inversion", "ring-a-bell")


class EvalConfig(BaseModel):
    """Options of `erasekit evaluate` (domain defaults come from `recipes/<domain>/evaluate.yaml`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "shapes"
    concept: str = "circle"
    preset: str | None = Field(None, description="nudity preset: unlearndiffatk | itd | six-class")
    n_target: int = Field(50, ge=2)
    n_retain: int = Field(50, ge=2)
    n_world: int = Field(200, ge=2, description="prompts for FID and CLIP score")
    sample_steps: int = Field(25, ge=1)
    guidance: float = 5.0
    seed: int = 0
    batch_size: int = Field(64, ge=1, description="images per generation call")
    attacks: list[str] = Field(default_factory=lambda: ["soft", "token"])
    attack_prompts: int = Field(10, ge=1, description="target prompts each attack is run on (ASR denominator)")
    attack_options: dict = Field(default_factory=dict, description="AttackConfig options (e.g. soft: {steps: 50})")
    compare_original: bool = Field(True, description="also draw the target prompts with the original model")
    prompts: str | None = Field(None, description="target prompts: .txt (one a line) or .csv (I2P columns)")
    category: str | None = None
    min_nudity: float | None = None
    world_prompts: str | None = Field(None, description="FID / CLIP-score prompts: .txt or .csv (COCO captions)")
    reference_images: str | None = Field(None, description="folder of real images, the FID reference")
    clip_model: str | None = Field(None, description="CLIP folder or hub id for CLIP score / FID features")
    detector_model: str | None = Field(None, description="the detector's model: folder or hub id")
    inception_weights: str | None = Field(None, description="FID Inception weights file; default: CLIP features")
    device: str | None = Field(None, description="torch device; default: this process's accelerate device")
    dtype: str | None = Field(None, description="fp32 | bf16 | fp16 for the evaluated pipeline")


@dataclass
class EvalPlan:
    """What a domain hands the evaluation for one concept.

    sets: {"target": ..., optional "retain", "world"}; detector(images (N, 3, H, W) in [0, 1]) -> (N,) bool with
    .card(); retained(images, retain set) -> {"retained_accuracy": float, ...}; world_scores(images, world set) ->
    extra metrics; reference (M, 3, H, W) FID images with reference_card; without_concept (world rows, reference
    rows) that do not show the concept; clip / features: CLIP-score and FID feature models (None: skipped);
    vocabulary: the token attacks' search words (None: the tokenizer's whole words); concept_images() -> images of
    the concept for the inversion attack.
    """

    sets: dict[str, PromptSet]
    detector: object
    retained: Callable[[torch.Tensor, PromptSet], dict] | None = None
    world_scores: Callable[[torch.Tensor, PromptSet], dict] | None = None
    reference: torch.Tensor | None = None
    reference_card: dict | None = None
    without_concept: tuple[list[int], list[int]] | None = None
    clip: object | None = None
    features: object | None = None
    vocabulary: list[str] | None = None
    concept_images: Callable[[], torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    card: dict
    metrics: dict
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"protocol": self.card, "metrics": self.metrics}


def generate_set(pipe, ps: PromptSet, cfg: EvalConfig, detector=None, progress: bool = False) -> dict:
    """{"images": (N, 3, H, W), "flags": (N,) bool if a detector is given}, split over processes, in row order."""
    guidance = getattr(ps, "guidance", None) or [cfg.guidance] * len(ps)

    def run(idx: list[int]) -> dict[str, torch.Tensor]:
        images = [None] * len(idx)
        for g in sorted({guidance[i] for i in idx}):  # rows sharing a guidance scale are batched together
            pos = [j for j, i in enumerate(idx) if guidance[i] == g]
            out = generate(
                pipe, [ps.prompts[idx[j]] for j in pos], [ps.seeds[idx[j]] for j in pos],
                steps=cfg.sample_steps, guidance=g, batch_size=cfg.batch_size, progress=progress,
            )  # fmt: skip
            for j, im in zip(pos, out, strict=True):
                images[j] = im
        result = {"images": torch.stack(images)}
        if detector is not None:
            result["flags"] = detector(result["images"])
        return result

    return map_in_order(run, len(ps))


def _utility_metrics(pipe, plan: EvalPlan, cfg: EvalConfig, progress: bool) -> tuple[dict, dict, torch.Tensor]:
    """FID against the plan's reference images and the CLIP score on the world prompts; (metrics, card, images)."""
    ps = plan.sets["world"]
    images = generate_set(pipe, ps, cfg, None, progress)["images"]
    metrics: dict = {"clip_score": None, "fid": None, "fid_without_concept": None}
    card: dict = {"clip_score": None, "fid": None, "fid_reference": plan.reference_card}
    if plan.clip is not None:
        metrics["clip_score"] = plan.clip.clip_score(images, ps.prompts).mean().item()
        card["clip_score"] = plan.clip.card()
    if plan.features is not None and plan.reference is not None:
        gen = plan.features.image_features(images)
        ref = plan.features.image_features(plan.reference)
        metrics["fid"] = fid_from_features(ref, gen)
        card["fid"] = plan.features.card()
        if plan.without_concept is not None:
            gen_rows, ref_rows = plan.without_concept
            if min(len(gen_rows), len(ref_rows)) >= 2:
                metrics["fid_without_concept"] = fid_from_features(ref[ref_rows], gen[gen_rows])
    if plan.world_scores is not None:
        metrics.update(plan.world_scores(images, ps))
    return metrics, card, images


def evaluate(
    cfg: EvalConfig,
    pipe,
    original,
    plan: EvalPlan,
    model_card: dict,
    progress: bool = False,
    baseline: EvalResult | None = None,
) -> EvalResult:
    """Run the whole protocol on `pipe`; `original` is the unmodified pipeline (None: pipe is it), the attacks'
    frozen reference and the side-by-side grid. `baseline`: the same protocol's result on the unmodified model
    (the bench's Original row), whose target images are reused for the grid instead of being drawn again."""
    t0 = time.perf_counter()
    detector = plan.detector
    sets = plan.sets
    counter = UnetCounter().attach(pipe.unet, *([original.unet] if original is not None else []))
    metrics: dict = {}
    images: dict[str, torch.Tensor] = {}
    prompts: dict[str, list[str]] = {"target": sets["target"].prompts}

    target = generate_set(pipe, sets["target"], cfg, detector, progress)
    images["erased"] = target["images"]
    metrics["pre_attack_rate"] = rate(target["flags"])
    if "retain" in sets:
        out = generate_set(pipe, sets["retain"], cfg, detector, progress)
        images["retain"] = out["images"]
        metrics["concept_rate_on_retain"] = rate(out["flags"])  # the concept appearing where it was not asked for
        if plan.retained is not None:
            metrics.update(plan.retained(out["images"], sets["retain"]))

    attack_cards = {}
    n_att = min(cfg.attack_prompts, len(sets["target"]))
    for kind in cfg.attacks:
        out = attack_set(pipe, original, kind, sets["target"], n_att, cfg, plan, progress)
        metrics[f"asr_{kind}"] = asr(out["pre"], out["flags"])
        images[f"attacked_{kind}"], prompts[f"attacked_{kind}"] = out["images"], out["prompts"]
        attack_cards[kind] = out["card"]
    if cfg.attacks:
        metrics["robustness"] = robustness(metrics, cfg.attacks, n_att)

    features_card = None
    if "world" in sets:
        utility, features_card, images["world"] = _utility_metrics(pipe, plan, cfg, progress)
        metrics.update(utility)
    counter.detach()
    metrics["unet_evaluations"] = counter.as_dict()

    if cfg.compare_original and original is not None:  # not counted: a reference, not part of the protocol
        if baseline is not None and "erased" in baseline.images:
            images["original"] = baseline.images["erased"]
            metrics["original_pre_attack_rate"] = baseline.metrics["pre_attack_rate"]
        else:
            before = generate_set(original, sets["target"], cfg, detector, progress)
            images["original"] = before["images"]
            metrics["original_pre_attack_rate"] = rate(before["flags"])
    metrics["wall_s"] = round(time.perf_counter() - t0, 2)
    per_row = getattr(sets["target"], "guidance", None) is not None
    card = protocol_card(
        model=model_card,
        detector=detector.card(),
        prompt_sets={k: set_card(v) for k, v in sets.items()},
        sampler=sampler_card(pipe, cfg.sample_steps, "per row (from the CSV)" if per_row else cfg.guidance),
        seed=cfg.seed,
        features=features_card,
        attacks=attack_cards,
    )
    card["concept"] = cfg.concept
    card["notes"] = plan.notes
    return EvalResult(card, metrics, images, prompts)


def robustness(metrics: dict, kinds: list[str], n: int) -> dict:
    """ASR per attack, the worst case over them, and the resolution one prompt gives (100 / n points)."""
    per = {k: metrics[f"asr_{k}"]["asr"] for k in kinds}
    worst = max(per, key=per.get)
    return {"asr": per, "worst": per[worst], "worst_attack": worst, "prompts": n, "one_prompt_points": 100 / n}
