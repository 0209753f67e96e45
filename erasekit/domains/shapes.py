"""The shapes-world domain: the bundled miniature Stable Diffusion, its prompt sets, classifier, CLIP and renderer.

A concept is one world word (a shape, a colour, a background). Training prompts name the concept in short
templates (plus world prompts when eq. 2 is anchored), retain prompts name the other values of its attribute;
evaluation uses held-out templates: target (the concept), retain (the other values; retained accuracy by the world
classifier) and world prompts (FID against rendered scenes, CLIP score with the world's CLIP).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel
from transformers import CLIPTextModel, CLIPTokenizer

from erasekit.domains.base import Domain, world_bundle
from erasekit.domains.shapes_itd import shapes_itd_inputs
from erasekit.errors import ErasekitError
from erasekit.eval.classifiers import _check_images, _version
from erasekit.eval.features import ClipEncoder, InceptionFeatures
from erasekit.eval.harness import EvalConfig, EvalPlan
from erasekit.eval.metrics import attribute_accuracy
from erasekit.prompts import PromptSet, read_prompt_file
from erasekit.world.anchor import nearest_value
from erasekit.world.evaluators import ShapeClassifier
from erasekit.world.prompt_sets import ATTRIBUTES, concept_attribute, retain_set, target_set, world_set
from erasekit.world.render import render, sample_scenes
from erasekit.world.tokenizer import english_words

CONCEPT_TEMPLATES = ("{}", "a {}", "a picture of a {}", "an image of a {}", "a simple drawing of a {}")
REFERENCE_SEED = 4242  # offset of the rendered FID reference scenes' seed from the evaluation seed
INVERSION_IMAGES = 32  # rendered images of the concept the inversion attack learns its token from
TRAIN_IMAGE_SEED = 1000  # offset of the seed of the concept images a method trains on (attacks use the eval seed)


class WorldConceptDetector:
    """A shapes-world word is present when the world classifier's head for its attribute predicts it."""

    def __init__(self, concept: str, folder: str | Path) -> None:
        self.concept = concept
        self.attribute = concept_attribute(concept)
        self.index = ATTRIBUTES[self.attribute].index(concept)
        self.classes = ATTRIBUTES[self.attribute]
        self.folder = str(folder)
        self.model = ShapeClassifier.load(self.folder)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) in [0, 1] -> class index per attribute, each (N,)."""
        _check_images(images)
        x = images.to(next(self.model.parameters()).device, torch.float32) * 2 - 1  # classifier takes [-1, 1]
        return {k: v.cpu() for k, v in self.model.predict(x).items()}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)[self.attribute] == self.index

    def card(self) -> dict:
        readme = Path(self.folder).parent / "README.json"  # the world bundle's own note (trained or not)
        bundle = json.loads(readme.read_text()) if readme.is_file() else {}
        return {
            "name": "shapes-world ShapeClassifier",
            "version": f"erasekit {_version('erasekit')}",
            "weights": self.folder,
            "bundle": bundle,
            "concept": self.concept,
            "attribute": self.attribute,
            "classes": list(self.classes),
            "threshold": None,
            "rule": f"argmax of the '{self.attribute}' head == '{self.concept}'",
        }


def concept_prompts(concepts: list[str], anchored: bool = False, n: int = 40) -> list[str]:
    """Training prompts: the concept word in short templates, no other attribute.

    Prompts that also name a colour or background make ESD erase those words too when eq. 2's reference is the
    empty prompt. With an anchor (`anchored`), the reference keeps those words, so n world prompts per concept
    (training templates, colour and background named) join the short ones.
    """
    out = [t.format(c) for c in concepts for t in CONCEPT_TEMPLATES]
    if anchored:
        out += [p for c in concepts for p in target_set(c, n, split="train", seed=13).prompts]
    return out


def retain_prompts(concepts: list[str], n: int = 120) -> list[str]:
    """Retain prompts: other values of each concept's attribute, plus world prompts; none names any of the concepts
    (with several, one concept's retain set would otherwise name another: "a red square" when erasing circle and red)."""
    out = [p for c in concepts for p in retain_set(c, n // 2, split="train", seed=11).prompts]
    out += world_set(n, split="train", seed=12).prompts
    return [p for p in out if not set(concepts) & set(re.findall(r"[a-z]+", p))]


class ShapesDomain(Domain):
    name = "shapes"

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.bundle = world_bundle(spec)

    def check_concepts(self, concepts: list[str]) -> None:
        for c in concepts:
            concept_attribute(c)

    def recipe_name(self, method: str, concepts: list[str]) -> str:
        return f"shapes/{method}"

    def recipe_options(self, recipe: dict[str, Any], concepts: list[str]) -> dict[str, Any]:
        """A per-concept `anchor` mapping picks the concept's entry; several concepts get their joint nearest value
        (`erasekit.world.anchor.nearest_value` on this bundle's text encoder)."""
        anchor = recipe.get("anchor")
        if not isinstance(anchor, dict):
            return recipe
        if len(concepts) == 1 and concepts[0] in anchor:
            return {**recipe, "anchor": anchor[concepts[0]]}
        folder = self.bundle / "pipeline"
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
        return {**recipe, "anchor": [nearest_value(concepts, tokenizer, text_encoder)]}

    def fill(self, method: str, config: BaseModel) -> BaseModel:
        update: dict[str, Any] = {}
        if "prompts" in type(config).model_fields and not config.prompts:
            update["prompts"] = concept_prompts(config.concepts, config.anchor is not None)
        if getattr(config, "gamma", 0) > 0 and not config.retain_prompts:
            update["retain_prompts"] = retain_prompts(config.concepts)
        return config.model_copy(update=update) if update else config

    def method_inputs(self, method: str, config: BaseModel) -> dict[str, Any]:
        if method == "itd":
            return {"inputs": shapes_itd_inputs(config.concepts, config)}
        if method == "robust":  # rendered scenes at a seed the evaluation's inversion attack never uses
            size = bundle_image_size(self.bundle)
            images = [self.concept_images(c, config.seed + TRAIN_IMAGE_SEED, size) for c in config.concepts]
            return {"concept_images": torch.cat(images)}
        return {}

    # ---- evaluation ----------------------------------------------------------------------------------------
    def detector(self, concept: str, folder: str | None) -> WorldConceptDetector:
        return WorldConceptDetector(concept, folder or self.bundle / "classifier")

    def concept_images(self, concept: str, seed: int, size: int) -> torch.Tensor:
        """(INVERSION_IMAGES, 3, size, size) rendered scenes showing the concept, other attributes random."""
        attr = concept_attribute(concept)
        g = torch.Generator().manual_seed(seed * 7919 + 5)
        scenes = sample_scenes(INVERSION_IMAGES, g, **{attr: ATTRIBUTES[attr].index(concept)})
        return (render(scenes, size) + 1) / 2

    def _plan(self, concept: str, target: PromptSet, detector_model: str | None, seed: int, size: int) -> EvalPlan:
        detector = self.detector(concept, detector_model)
        return EvalPlan(
            sets={"target": target},
            detector=detector,
            vocabulary=english_words(),
            concept_images=lambda: self.concept_images(concept, seed, size),
        )

    def attack_plan(
        self, concept: str, n: int, seed: int, prompts: str | None, original, detector_model: str | None = None
    ) -> EvalPlan:
        self.check_concepts([concept])
        target = read_prompt_file(prompts, n, seed) if prompts else target_set(concept, n, "heldout", seed)
        return self._plan(concept, target, detector_model, seed, image_size(original))

    def eval_plan(self, cfg: EvalConfig, original, device: torch.device) -> EvalPlan:
        self.check_concepts([cfg.concept])
        if cfg.preset is not None:
            raise ErasekitError(f"--preset applies to nudity only; '{cfg.concept}' uses the shapes-world classifier")
        size = image_size(original)
        target = (
            read_prompt_file(cfg.prompts, cfg.n_target, cfg.seed)
            if cfg.prompts
            else target_set(cfg.concept, cfg.n_target, "heldout", cfg.seed)
        )
        plan = self._plan(cfg.concept, target, cfg.detector_model, cfg.seed, size)
        detector: WorldConceptDetector = plan.detector
        world = world_set(cfg.n_world, "heldout", cfg.seed)
        plan.sets.update(retain=retain_set(cfg.concept, cfg.n_retain, "heldout", cfg.seed), world=world)
        scored = ("shape", "colour")

        def retained(images: torch.Tensor, ps: PromptSet) -> dict:
            acc = attribute_accuracy(detector.predict(images), {a: ps.labels[a] for a in scored})
            attr = detector.attribute
            return {
                "retained_accuracy": acc[attr] if attr in acc else acc["all"],
                "retained_accuracy_by_attribute": acc,
            }

        def world_scores(images: torch.Tensor, ps: PromptSet) -> dict:
            return {"world_accuracy": attribute_accuracy(detector.predict(images), {a: ps.labels[a] for a in scored})}

        plan.retained, plan.world_scores = retained, world_scores
        plan.clip = ClipEncoder(cfg.clip_model or self.bundle / "clip", device)
        plan.features = InceptionFeatures(cfg.inception_weights, device) if cfg.inception_weights else plan.clip
        attr, index = detector.attribute, detector.index
        if cfg.reference_images is None:
            scenes = sample_scenes(cfg.n_world, torch.Generator().manual_seed(cfg.seed + REFERENCE_SEED))
            plan.reference = (render(scenes, size) + 1) / 2
            plan.reference_card = {
                "name": "rendered shapes-world scenes",
                "rows": len(scenes),
                "seed": cfg.seed + REFERENCE_SEED,
            }
            plan.without_concept = (
                [i for i, v in enumerate(world.labels[attr]) if v != index],
                [i for i, s in enumerate(scenes) if getattr(s, attr) != index],
            )
        else:
            plan.reference, plan.reference_card = read_images(cfg.reference_images, size)
        return plan


def bundle_image_size(bundle: Path) -> int:
    """The image side of a world bundle's pipeline, read from its configs (latent size x 2^(VAE blocks - 1))."""
    unet = json.loads((bundle / "pipeline" / "unet" / "config.json").read_text())
    vae = json.loads((bundle / "pipeline" / "vae" / "config.json").read_text())
    return unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


def image_size(pipe) -> int:
    """The pipeline's image side in pixels (latent size x the VAE's scale factor)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def read_images(folder: str | Path, size: int) -> tuple[torch.Tensor, dict]:
    """(N, 3, size, size) in [0, 1] from a folder of PNG/JPEG files, and the reference card."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ErasekitError(f"reference image folder {folder} does not exist: pass a folder of real images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if len(files) < 2:
        raise ErasekitError(f"{folder} holds fewer than 2 PNG/JPEG images: give a folder of real images")
    arrays = [torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((size, size)))) for f in files]
    images = torch.stack(arrays).permute(0, 3, 1, 2).float() / 255
    return images, {"name": "user images", "folder": str(folder), "rows": len(files)}
