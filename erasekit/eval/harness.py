"""`evaluate`: generate, detect, attack and score one (possibly erased) pipeline under a recorded protocol.

    EvalConfig      every knob of an evaluation (YAML keys and CLI flags share these names)
    evaluate(cfg)   -> EvalResult(card, metrics, images); images are (N, 3, H, W) in [0, 1], kept for the report

Shapes world: target prompts name the concept, retain prompts name the other values of its attribute, world
prompts (all attributes random) give FID against rendered scenes and the CLIP score. Other models: target prompts
from an I2P-format CSV, FID/CLIP prompts from a COCO caption CSV and real images from a folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from erasekit.errors import ErasekitError
from erasekit.eval.distributed import map_in_order
from erasekit.eval.metrics import asr, attribute_accuracy, fid_from_features, rate
from erasekit.eval.prompts import EvalPromptSet, read_coco_csv, read_i2p_csv, set_card, shapes_sets
from erasekit.eval.protocol import protocol_card, sampler_card
from erasekit.world.prompt_sets import PromptSet

AttackKind = Literal["soft", "token"]


class EvalConfig(BaseModel):
    """Options of `erasekit evaluate`."""

    model_config = ConfigDict(extra="forbid")

    model: str = "shapes"
    concept: str = "circle"
    preset: str | None = Field(None, description="nudity preset: unlearndiffatk | itd | six-class")
    text_encoder: str | None = None
    unet: str | None = None
    patch: str | None = Field(None, description="ItD patch folder to attach")
    n_target: int = Field(50, ge=2)
    n_retain: int = Field(50, ge=2)
    n_world: int = Field(200, ge=2, description="prompts for FID and CLIP score")
    steps: int = Field(25, ge=1)
    guidance: float = 5.0
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    attacks: list[AttackKind] = Field(default_factory=lambda: ["soft", "token"])
    attack_prompts: int = Field(10, ge=1, description="target prompts each attack is run on (ASR denominator)")
    attack_options: dict = Field(default_factory=dict, description="passed to the attack (e.g. steps, k)")
    compare_original: bool = Field(True, description="also draw the target prompts with the original model")
    prompts: str | None = Field(None, description="I2P-format CSV of target prompts (models other than shapes)")
    category: str | None = None
    min_nudity: float | None = None
    coco: str | None = Field(None, description="COCO caption CSV for FID and CLIP score (models other than shapes)")
    reference_images: str | None = Field(None, description="folder of real images, FID reference (non-shapes)")
    clip_model: str | None = Field(None, description="local CLIP folder (default: the shapes world's CLIP)")
    classifier: str | None = Field(None, description="shapes-world classifier folder (default: the bundled one)")
    inception_weights: str | None = Field(None, description="FID Inception weights file; default: CLIP features")
    device: str | None = Field(None, description="torch device; default: this process's accelerate device")


@dataclass
class EvalResult:
    card: dict
    metrics: dict
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"protocol": self.card, "metrics": self.metrics}


def is_world(cfg: EvalConfig) -> bool:
    """Shapes-world protocol (shipped prompt sets, world classifier, rendered FID reference) vs. the SD one."""
    from erasekit.eval.classifiers import NUDITY

    return cfg.concept != NUDITY


def device(cfg: EvalConfig) -> torch.device:
    """cfg.device, else the device accelerate gives this process (its GPU under a multi-GPU launch, else CPU)."""
    from erasekit.eval.distributed import process_device

    return torch.device(cfg.device) if cfg.device else process_device()


def load_evaluated(cfg: EvalConfig):
    """The pipeline under test (text encoder / UNet replaced, ItD patch attached) and a card of what it is."""
    from erasekit.pipeline import artifact_info, load_pipeline

    pipe = load_pipeline(cfg.model, text_encoder=cfg.text_encoder, unet=cfg.unet, device=device(cfg))
    card = {"spec": cfg.model, "text_encoder": cfg.text_encoder, "unet": cfg.unet, "patch": cfg.patch}
    for key in ("text_encoder", "unet", "patch"):
        folder = getattr(cfg, key)
        if folder is not None:
            card[f"{key}_info"] = artifact_info(folder)
    if cfg.patch is not None:
        try:
            from erasekit.methods.itd import ItdPatch
        except ImportError as e:
            raise ErasekitError("--patch needs erasekit's ItD module, which is not installed in this build") from e
        ItdPatch.load(cfg.patch).attach(pipe)
    return pipe, card


def _prompt_sets(cfg: EvalConfig) -> dict[str, PromptSet]:
    if is_world(cfg) and cfg.prompts is None:
        return shapes_sets(cfg.concept, cfg.n_target, cfg.n_retain, cfg.n_world, cfg.seed)
    if cfg.prompts is None:
        raise ErasekitError("give target prompts for this model: --prompts an I2P-format CSV (prompt, evaluation_seed)")
    sets: dict[str, PromptSet] = {"target": read_i2p_csv(cfg.prompts, cfg.category, cfg.min_nudity, cfg.n_target)}
    if cfg.coco is not None:
        sets["world"] = read_coco_csv(cfg.coco, cfg.n_world, cfg.seed)
    return sets


def generate_set(pipe, ps: PromptSet, cfg: EvalConfig, detector=None, progress: bool = False) -> dict:
    """{"images": (N, 3, H, W), "flags": (N,) bool if a detector is given}, split over processes, in row order."""
    from erasekit.generation import generate

    guidance = getattr(ps, "guidance", None) or [cfg.guidance] * len(ps)

    def run(idx: list[int]) -> dict[str, torch.Tensor]:
        images = [None] * len(idx)
        for g in sorted({guidance[i] for i in idx}):  # rows sharing a guidance scale are batched together
            pos = [j for j, i in enumerate(idx) if guidance[i] == g]
            out = generate(
                pipe, [ps.prompts[idx[j]] for j in pos], [ps.seeds[idx[j]] for j in pos],
                steps=cfg.steps, guidance=g, batch_size=cfg.batch_size, progress=progress,
            )  # fmt: skip
            for j, im in zip(pos, out):
                images[j] = im
        result = {"images": torch.stack(images)}
        if detector is not None:
            result["flags"] = detector(result["images"])
        return result

    return map_in_order(run, len(ps))


def _reference_images(cfg: EvalConfig, n: int, size: int) -> torch.Tensor | None:
    """Real images for FID: rendered world scenes, or the user's folder resized to the model's size."""
    if is_world(cfg) and cfg.reference_images is None:
        from erasekit.world.render import render

        return (render(_reference_scenes(cfg, n), size) + 1) / 2
    if cfg.reference_images is None:
        return None
    import numpy as np
    from PIL import Image

    if not Path(cfg.reference_images).is_dir():
        raise ErasekitError(
            f"reference image folder {cfg.reference_images} does not exist: pass a folder of real images"
        )
    files = sorted(p for p in Path(cfg.reference_images).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if len(files) < 2:
        raise ErasekitError(f"{cfg.reference_images} holds fewer than 2 PNG/JPEG images: give a folder of real images")
    arrays = [torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((size, size)))) for f in files]
    return torch.stack(arrays).permute(0, 3, 1, 2).float() / 255


def _reference_scenes(cfg: EvalConfig, n: int) -> list:
    from erasekit.world.render import sample_scenes

    return sample_scenes(n, torch.Generator().manual_seed(cfg.seed + 4242))


def _fid_without_concept(
    cfg: EvalConfig, ps: PromptSet, detector, gen_feats: torch.Tensor, ref_feats: torch.Tensor | None
) -> float | None:
    """FID over the world prompts that do not ask for the concept, against reference scenes without it (shapes
    world only): a successful erasure changes the concept's own images, which the plain FID also counts.
    gen_feats (N, F) / ref_feats (M, F): the features of all generated / reference images, rows as in the sets."""
    attr = getattr(detector, "attribute", None)
    if not is_world(cfg) or cfg.reference_images is not None or attr not in ps.labels or ref_feats is None:
        return None
    gen_rows = [i for i, v in enumerate(ps.labels[attr]) if v != detector.index]
    ref_rows = [i for i, s in enumerate(_reference_scenes(cfg, len(ref_feats))) if getattr(s, attr) != detector.index]
    if min(len(gen_rows), len(ref_rows)) < 2:
        return None
    return fid_from_features(ref_feats[ref_rows], gen_feats[gen_rows])


def _feature_model(cfg: EvalConfig):
    from erasekit.eval.features import ClipEncoder, InceptionFeatures

    if cfg.clip_model is None and not is_world(cfg):
        raise ErasekitError(
            "CLIP score and FID features for this model need --clip-model: a local CLIP folder "
            "(e.g. openai/clip-vit-large-patch14 saved where there is network)"
        )
    clip = ClipEncoder(cfg.clip_model, device(cfg))
    return clip, (InceptionFeatures(cfg.inception_weights, device(cfg)) if cfg.inception_weights else clip)


def _retain_metrics(pipe, ps: PromptSet, cfg: EvalConfig, detector, progress: bool) -> tuple[dict, torch.Tensor]:
    """Retained accuracy: the classifier's accuracy, on retain prompts, for the concept's attribute."""
    out = generate_set(pipe, ps, cfg, detector, progress)
    acc = attribute_accuracy(out["images"], {a: ps.labels[a] for a in ("shape", "colour")}, detector.model)
    attr = detector.attribute
    metrics = {
        "retained_accuracy": acc[attr] if attr in acc else acc["all"],
        "retained_accuracy_by_attribute": acc,
        "concept_rate_on_retain": rate(out["flags"]),  # the concept appearing where it was not asked for
    }
    return metrics, out["images"]


def _utility_metrics(pipe, ps: PromptSet, cfg: EvalConfig, detector, progress: bool) -> tuple[dict, dict, torch.Tensor]:
    """FID against real (or rendered) images and the CLIP score on the world / COCO prompts; (metrics, card, images)."""
    clip, feats = _feature_model(cfg)
    images = generate_set(pipe, ps, cfg, None, progress)["images"]
    ref = _reference_images(cfg, len(ps), images.shape[-1])
    gen_feats = feats.image_features(images)
    ref_feats = feats.image_features(ref) if ref is not None else None
    metrics = {
        "clip_score": clip.clip_score(images, ps.prompts).mean().item(),
        "fid": fid_from_features(ref_feats, gen_feats) if ref_feats is not None else None,
        "fid_without_concept": _fid_without_concept(cfg, ps, detector, gen_feats, ref_feats),
    }
    if ps.labels:
        labels = {a: ps.labels[a] for a in ("shape", "colour")}
        metrics["world_accuracy"] = attribute_accuracy(images, labels, detector.model)
    card = {"fid": feats.card(), "clip_score": clip.card(), "fid_reference": _ref_card(cfg, ref)}
    return metrics, card, images


def evaluate(cfg: EvalConfig, progress: bool = False, baseline: EvalResult | None = None) -> EvalResult:
    """Run the whole protocol on one pipeline; see the module docstring for what each set is used for.

    `baseline`: the same protocol's result on the unmodified model (the bench passes its Original row), whose
    target images are reused for the side-by-side grid instead of being drawn again.
    """
    from erasekit.diffusion import UnetCounter
    from erasekit.eval.attack_adapter import attack_set
    from erasekit.eval.classifiers import make_detector
    from erasekit.pipeline import load_pipeline

    t0 = time.perf_counter()
    detector = make_detector(cfg.concept, cfg.preset, cfg.model, cfg.classifier)
    sets = _prompt_sets(cfg)
    pipe, model_card = load_evaluated(cfg)
    # The unmodified pipeline: the attacks' frozen reference and the side-by-side grid (None: pipe is it).
    original = load_pipeline(cfg.model, device=device(cfg)) if any((cfg.text_encoder, cfg.unet, cfg.patch)) else None
    counter = UnetCounter().attach(pipe.unet, *([original.unet] if original else []))
    metrics: dict = {}
    images: dict[str, torch.Tensor] = {}
    prompts: dict[str, list[str]] = {"target": sets["target"].prompts}

    target = generate_set(pipe, sets["target"], cfg, detector, progress)
    images["erased"] = target["images"]
    metrics["pre_attack_rate"] = rate(target["flags"])
    if "retain" in sets:
        retained, images["retain"] = _retain_metrics(pipe, sets["retain"], cfg, detector, progress)
        metrics.update(retained)

    attack_cards = {}
    n_att = min(cfg.attack_prompts, len(sets["target"]))
    for kind in cfg.attacks:
        out = attack_set(pipe, original, kind, sets["target"], n_att, cfg, detector, progress)
        if out is None:
            metrics[f"asr_{kind}"] = None
            attack_cards[kind] = {"status": "not available in this build (erasekit.attacks missing)"}
            continue
        metrics[f"asr_{kind}"] = asr(out["pre"], out["flags"])
        images[f"attacked_{kind}"], prompts[f"attacked_{kind}"] = out["images"], out["prompts"]
        attack_cards[kind] = out["card"]

    features_card = None
    if "world" in sets:
        utility, features_card, images["world"] = _utility_metrics(pipe, sets["world"], cfg, detector, progress)
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
    per_row = isinstance(sets["target"], EvalPromptSet) and sets["target"].guidance is not None
    card = protocol_card(
        model=model_card,
        detector=detector.card(),
        prompt_sets={k: set_card(v) for k, v in sets.items()},
        sampler=sampler_card(pipe, cfg.steps, "per row (from the CSV)" if per_row else cfg.guidance),
        seed=cfg.seed,
        features=features_card,
        attacks=attack_cards,
    )
    card["concept"] = cfg.concept
    return EvalResult(card, metrics, images, prompts)


def _ref_card(cfg: EvalConfig, ref: torch.Tensor | None) -> dict | None:
    if ref is None:
        return None
    if is_world(cfg) and cfg.reference_images is None:
        return {"name": "rendered shapes-world scenes", "rows": len(ref), "seed": cfg.seed + 4242}
    return {"name": "user images", "folder": cfg.reference_images, "rows": len(ref)}
