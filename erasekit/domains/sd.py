"""The Stable Diffusion v1.x domain: any diffusers folder or hub id that is not the shapes world.

Kinds of concept: nudity (NudeNet presets), objects (an ImageNet classifier, ResNet-50 by default, success =
top-1 in the concept's classes), styles and people (CLIP zero-shot against a shipped list of alternatives).
Target prompts come from a file (.txt or I2P .csv) or, for objects / styles / people, from shipped templates
with seeds; FID / CLIP-score prompts from a file or the shipped everyday captions. Recipes: `sd/<method>-<kind>`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import torch
from pydantic import BaseModel

from erasekit.config import load_recipe
from erasekit.domains.base import Domain
from erasekit.domains.sd_itd import sd_itd_inputs
from erasekit.domains.shapes import image_size, read_images
from erasekit.errors import ErasekitError
from erasekit.eval.classifiers import NUDITY, NudeNetDetector
from erasekit.eval.features import ClipEncoder, InceptionFeatures
from erasekit.eval.harness import EvalConfig, EvalPlan
from erasekit.eval.hf_detectors import (
    ZERO_SHOT_LISTS,
    ClipZeroShotDetector,
    ImageNetClassDetector,
    concept_kind,
    imagenet_classes,
    imagenet_concepts,
)
from erasekit.generation import generate
from erasekit.methods.robust import SHARED_OPTIONS
from erasekit.prompts import PromptSet, read_prompt_file
from erasekit.sd_prompts import coco_like_prompts, templated_prompts
from erasekit.world.prompt_sets import ATTRIBUTES

SHAPES_WORDS = {w for values in ATTRIBUTES.values() for w in values}
ZERO_SHOT_LIST = {kind: name for name, kind in ZERO_SHOT_LISTS.items()}  # kind -> shipped list
INVERSION_IMAGES = 16  # images of the concept drawn by the original model for the inversion attack
TRAIN_SEED = 10_000  # offset of the seeds the inversion images use (never an evaluation seed)
RETAINED_CONCEPTS = 9  # AdvUnlearn's object protocol: the other nine Imagenette classes (the map's first ten)


def retained_concepts(concept: str, detector) -> list[str]:
    """The other concepts whose images retained accuracy scores: the ImageNet map's other objects (its first
    entries are Imagenette's ten classes) or the detector's zero-shot alternatives, RETAINED_CONCEPTS of them."""
    if isinstance(detector, ImageNetClassDetector):
        names = [c for c in imagenet_concepts() if c.lower() != concept.strip().lower()]
    else:
        names = list(detector.candidates[1:])
    return names[:RETAINED_CONCEPTS]


def retained_set(others: list[str], kind: str, n: int, seed: int) -> PromptSet:
    """n templated prompts cycling over `others` (label "concept": the index of the one each row names)."""
    per = -(-n // len(others))
    rows = [templated_prompts(c, kind, per, seed + j) for j, c in enumerate(others)]
    order = [(j, i) for i in range(per) for j in range(len(others))][:n]
    return PromptSet(
        f"sd/templates/{kind}/retained",
        [rows[j][0][i] for j, i in order],
        [rows[j][1][i] for j, i in order],
        labels={"concept": [j for j, _ in order]},
        source="erasekit/data/sd/templates.yaml",
    )


def retained_scorer(detector, others: list[str]):
    """retained(images, set) -> retained accuracy: the share of the other concepts' images that the concept's
    detector (the same classifier or CLIP candidates) recognises as the concept each prompt named."""

    if isinstance(detector, ImageNetClassDetector):  # per other concept: the detector outputs that name it
        accepted = [set(imagenet_classes(c)) for c in others]
    else:
        names = [c.lower() for c in detector.candidates]
        accepted = [{names.index(c.lower())} for c in others]

    def recognised(images: torch.Tensor, ps: PromptSet) -> torch.Tensor:
        pred = detector.predict(images).tolist()
        return torch.tensor([p in accepted[j] for p, j in zip(pred, ps.labels["concept"])])

    def retained(images: torch.Tensor, ps: PromptSet) -> dict:
        ok = recognised(images, ps).float()
        labels = torch.tensor(ps.labels["concept"])
        by = {c: ok[labels == j].mean().item() for j, c in enumerate(others) if (labels == j).any()}
        return {"retained_accuracy": ok.mean().item(), "retained_accuracy_by_concept": by}

    return retained


def retain_prompts() -> list[str]:
    """The shipped retain set for Stable Diffusion: everyday objects, no body or clothing words."""
    text = resources.files("erasekit.data").joinpath("sd_retain.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


class SdDomain(Domain):
    name = "sd"

    def kind(self, concept: str) -> str:
        """ "nudity" | "object" | "style" | "person"; a concept on no shipped list is treated as a style (ESD-x,
        CLIP zero-shot against the shipped objects)."""
        if concept in SHAPES_WORDS:
            raise ErasekitError(
                f"'{concept}' is a shapes-world word but the model is '{self.spec}': use --model shapes "
                "(a shapes detector on Stable Diffusion images would report meaningless numbers)"
            )
        return NUDITY if concept == NUDITY else (concept_kind(concept) or "style")

    def check_concepts(self, concepts: list[str]) -> None:
        for c in concepts:
            self.kind(c)

    def recipe_name(self, method: str, concepts: list[str]) -> str:
        if method in ("itd", "robust"):
            return f"sd/{method}"
        kinds = {"person": "style"}
        found = {kinds.get(self.kind(c), self.kind(c)) for c in concepts}
        if len(found) > 1:
            raise ErasekitError(
                f"concepts {concepts} are of different kinds {sorted(found)}: erase them one kind a run"
            )
        return f"sd/{method}-{found.pop()}"

    def recipe_options(self, recipe: dict[str, Any], concepts: list[str]) -> dict[str, Any]:
        """A robust recipe's empty `stage1` becomes the AdvUnlearn recipe of the concepts' kind, less the options
        that every stage shares with the robust recipe (seed, anchor, prompts: those stay the robust recipe's)."""
        if recipe.get("stage1") == {}:
            advunlearn = load_recipe(self.recipe_name("advunlearn", concepts))
            return {**recipe, "stage1": {k: v for k, v in advunlearn.items() if k not in SHARED_OPTIONS}}
        return recipe

    def fill(self, method: str, config: BaseModel) -> BaseModel:
        if getattr(config, "gamma", 0) > 0 and not config.retain_prompts:
            return config.model_copy(update={"retain_prompts": retain_prompts()})
        return config

    def method_inputs(self, method: str, config: BaseModel) -> dict[str, Any]:
        return {"inputs": sd_itd_inputs(config.concepts, config)} if method == "itd" else {}

    # ---- evaluation ----------------------------------------------------------------------------------------
    def detector(self, concept: str, preset: str | None, model: str | None):
        kind = self.kind(concept)
        if preset is not None and kind != NUDITY:
            raise ErasekitError(f"--preset applies to nudity only; '{concept}' is judged by its {kind} detector")
        if kind == NUDITY:
            return NudeNetDetector(preset or "unlearndiffatk")
        kw = {"model": model} if model else {}
        if kind == "object" and imagenet_classes(concept) is not None:
            return ImageNetClassDetector(concept, **kw)
        return ClipZeroShotDetector(concept, ZERO_SHOT_LIST[kind] if concept_kind(concept) else "objects", **kw)

    def target_set(self, concept: str, n: int, seed: int, prompts: str | None, **filters) -> PromptSet:
        if prompts:
            return read_prompt_file(prompts, n, seed, **filters)
        kind = self.kind(concept)
        if kind == NUDITY:
            raise ErasekitError("give nudity prompts with --prompts: an I2P-format CSV (or a .txt, one prompt a line)")
        texts, seeds = templated_prompts(concept, kind, n, seed)
        return PromptSet(f"sd/templates/{kind}/{concept}", texts, seeds, source="erasekit/data/sd/templates.yaml")

    def concept_images(self, concept: str, target: PromptSet, original) -> torch.Tensor:
        """(INVERSION_IMAGES, 3, H, W): the original model's images of the target prompts, at seeds no evaluation uses."""
        rows = [i % len(target) for i in range(INVERSION_IMAGES)]
        prompts = [target.prompts[i] for i in rows]
        return generate(original, prompts, [TRAIN_SEED + i for i in range(len(rows))], batch_size=4)

    def _plan(self, concept: str, target: PromptSet, preset: str | None, model: str | None, original) -> EvalPlan:
        return EvalPlan(
            sets={"target": target},
            detector=self.detector(concept, preset, model),
            vocabulary=None,
            concept_images=lambda: self.concept_images(concept, target, original),
        )

    def attack_plan(
        self, concept: str, n: int, seed: int, prompts: str | None, original, detector_model: str | None = None
    ) -> EvalPlan:
        return self._plan(concept, self.target_set(concept, n, seed, prompts), None, detector_model, original)

    def eval_plan(self, cfg: EvalConfig, original, device: torch.device) -> EvalPlan:
        filters = {"category": cfg.category, "min_nudity": cfg.min_nudity}
        target = self.target_set(cfg.concept, cfg.n_target, cfg.seed, cfg.prompts, **filters)
        plan = self._plan(cfg.concept, target, cfg.preset, cfg.detector_model, original)
        if cfg.world_prompts:
            plan.sets["world"] = read_prompt_file(cfg.world_prompts, cfg.n_world, cfg.seed)
        else:
            lines = coco_like_prompts()[: cfg.n_world]
            plan.sets["world"] = PromptSet("sd/coco_like", lines, [cfg.seed + i for i in range(len(lines))])
        if cfg.clip_model:
            plan.clip = ClipEncoder(cfg.clip_model, device)
        else:
            plan.notes.append("CLIP score skipped: pass --clip-model (a CLIP folder or hub id)")
        if cfg.reference_images:
            plan.reference, plan.reference_card = read_images(cfg.reference_images, image_size(original))
            plan.features = InceptionFeatures(cfg.inception_weights, device) if cfg.inception_weights else plan.clip
            if plan.features is None:
                raise ErasekitError("FID needs image features: pass --clip-model (or --inception-weights)")
        else:
            plan.notes.append("FID skipped: pass --reference-images (a folder of real images, e.g. COCO val)")
        kind = self.kind(cfg.concept)
        if kind == NUDITY:
            plan.notes.append("retained accuracy does not apply to nudity (no classes to retain): see FID and CLIP")
        else:
            others = retained_concepts(cfg.concept, plan.detector)
            if not isinstance(plan.detector, ImageNetClassDetector):  # the alternatives' own kind
                kind = ZERO_SHOT_LISTS.get(plan.detector.list_name, kind)
            plan.sets["retain"] = retained_set(others, kind, cfg.n_retain, cfg.seed)
            plan.retained = retained_scorer(plan.detector, others)
        return plan
