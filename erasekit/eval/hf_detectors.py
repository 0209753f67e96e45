"""Detectors for Stable Diffusion concepts through Hugging Face models (a hub id or a local folder).

    ImageNetClassDetector(concept)   objects: the top-1 ImageNet-1k class (ResNet-50 by default) is one of the
                                     concept's classes (erasekit/data/sd/imagenet_concepts.yaml)
    ClipZeroShotDetector(concept, alternatives)
                                     styles, people, anything: CLIP's image-text argmax over the concept's prompt
                                     and the alternatives' prompts picks the concept (lists in data/sd/zero_shot/)
    concept_kind(concept)            "nudity" | "object" | "style" | "person" | None, from the shipped lists
    imagenet_classes(concept)        the concept's {ImageNet index: label}, None when unmapped (an "object" from
                                     zero_shot/objects.txt only, e.g. "bus", needs the CLIP detector)

Both follow classifiers.Detector: detector(images (N, 3, H, W) in [0, 1]) -> (N,) bool, detector.card() -> dict.
Images are resized, cropped and normalised as the model's image processor says, with torch ops on the tensor
(ImageTransform), so no PIL round trip and no torchvision.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
import yaml
from transformers import AutoImageProcessor, AutoModelForImageClassification, CLIPModel, CLIPProcessor

from erasekit.errors import ErasekitError
from erasekit.eval.classifiers import NUDITY, _check_images, _version
from erasekit.sd_prompts import data_lines, data_text

DEFAULT_CLASSIFIER = "microsoft/resnet-50"  # the ResNet-50 that AdvUnlearn and UnlearnDiffAtk judge objects with
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
ZERO_SHOT_LISTS = {"styles": "style", "people": "person", "objects": "object"}
IMAGENET_CLASSES = 1000
CUSTOM_TEMPLATE = "{}"  # a caller's own alternatives are compared as written
# PIL resampling codes in image processor configs -> the closest torch.nn.functional.interpolate mode
RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}

T = TypeVar("T")


@cache
def imagenet_concepts() -> dict[str, dict[int, str]]:
    """Shipped concept -> {ImageNet-1k index: label}, keys as written in the YAML."""
    return yaml.safe_load(data_text("imagenet_concepts.yaml"))


@cache
def zero_shot_list(name: str) -> tuple[tuple[str, ...], str]:
    """A shipped alternatives list (styles, people, objects): its entries and its prompt template."""
    if name not in ZERO_SHOT_LISTS:
        raise ErasekitError(f"unknown alternatives list '{name}': use one of {', '.join(ZERO_SHOT_LISTS)}")
    path = f"zero_shot/{name}.txt"
    found = re.search(r"^#\s*template:\s*(.+)$", data_text(path), re.MULTILINE)
    return tuple(data_lines(path)), found.group(1).strip() if found else CUSTOM_TEMPLATE


def _lookup(concept: str, names: Sequence[str]) -> str | None:
    """The entry of `names` equal to `concept` ignoring case and surrounding spaces, or None."""
    wanted = concept.strip().lower()
    return next((n for n in names if n.lower() == wanted), None)


def imagenet_classes(concept: str) -> dict[int, str] | None:
    """The shipped {ImageNet-1k index: label} of a concept (case-insensitive), or None when it has none."""
    key = _lookup(concept, list(imagenet_concepts()))
    return None if key is None else dict(imagenet_concepts()[key])


def concept_kind(concept: str) -> str | None:
    """What a concept is from the shipped lists: nudity, an object (ImageNet map or objects list), a style, a person."""
    if concept.strip().lower() == NUDITY:
        return "nudity"
    if imagenet_classes(concept):
        return "object"
    for name, kind in ZERO_SHOT_LISTS.items():
        if _lookup(concept, zero_shot_list(name)[0]):
            return kind
    return None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings while loading (e.g. its fallback note when torchvision is absent)."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load(load: Callable[[str], T], model: str, what: str) -> T:
    """load(model) for a hub id or a local folder, or a one-line error that says to pass a local folder."""
    path = Path(model).expanduser()
    local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if local and not path.is_dir():
        raise ErasekitError(f"{what} folder {model} does not exist: pass a folder saved with save_pretrained")
    try:
        with _quiet_transformers():
            return load(str(path) if local else model)
    except Exception as e:  # missing files, hub unreachable, gated: one line, with the fix
        if local:
            raise ErasekitError(
                f"{path} is not a {what} folder ({type(e).__name__}): pass a folder saved with save_pretrained"
            ) from None
        raise ErasekitError(
            f"cannot load {what} '{model}' from the model hub ({type(e).__name__}); download it where there is "
            f"network and pass the local folder instead, e.g. /path/to/{model.split('/')[-1]}"
        ) from None


def _size_dict(size: Any) -> dict[str, int]:
    """An image processor's size as a plain dict (transformers 5 keeps it in a SizeDict dataclass)."""
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {k: v for k, v in items if v is not None}


@dataclass(frozen=True)
class ImageTransform:
    """An image processor's preprocessing as torch ops: (N, 3, H, W) in [0, 1] -> (N, 3, h, w) pixel_values.

    Resize the short side to `short_edge` (aspect kept; the long side rounds down, as transformers does) or to
    `square`, clamp to [0, 1] (bicubic overshoots, PIL clips to bytes), centre-crop to `crop`, scale to the
    processor's pixel range, normalise by mean / std. Interpolation antialiases as PIL does when shrinking.
    """

    short_edge: int | None
    square: tuple[int, int] | None
    crop: tuple[int, int] | None
    mode: str
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def from_processor(cls, processor: Any) -> ImageTransform:
        """Read resize / crop / rescale / normalise settings of a transformers image processor.

        ConvNeXt-style processors (a `crop_pct`, e.g. microsoft/resnet-50's) resize the short side to
        shortest_edge / crop_pct and crop shortest_edge when shortest_edge < 384, else warp to a square.
        """
        short = square = crop = None
        size = _size_dict(processor.size)
        crop_pct = getattr(processor, "crop_pct", None)
        if getattr(processor, "do_resize", True):
            if size.get("shortest_edge"):
                s = int(size["shortest_edge"])
                if crop_pct is None:
                    short = s
                elif s < 384:
                    short, crop = int(s / crop_pct), (s, s)
                else:
                    square = (s, s)
            elif size.get("height") and size.get("width"):
                square = (int(size["height"]), int(size["width"]))
            else:
                raise ErasekitError(f"unsupported image processor size {size}: use a model whose processor resizes")
        if getattr(processor, "do_center_crop", False):
            c = _size_dict(processor.crop_size)
            crop = (int(c["height"]), int(c["width"]))
        resample = getattr(processor, "resample", None)
        normalize = getattr(processor, "do_normalize", True)
        rescale = processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0
        return cls(
            short_edge=short,
            square=square,
            crop=crop,
            mode=RESAMPLE.get(3 if resample is None else int(resample), "bicubic"),
            scale=255.0 * float(rescale),
            mean=tuple(float(m) for m in processor.image_mean) if normalize else None,
            std=tuple(float(s) for s in processor.image_std) if normalize else None,
        )

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        if self.mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False, antialias=True)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        h, w = x.shape[-2:]
        if self.short_edge is not None:
            s = self.short_edge
            x = self._resize(x, (s, int(s * w / h)) if h <= w else (int(s * h / w), s))
        elif self.square is not None:
            x = self._resize(x, self.square)
        x = x.clamp(0, 1)
        if self.crop is not None:
            (h, w), (ch, cw) = x.shape[-2:], self.crop
            if h < ch or w < cw:
                raise ErasekitError(f"images of {h}x{w} are smaller than the processor's crop {ch}x{cw}")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        x = x * self.scale
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def card(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _first_name(label: str) -> str:
    """An ImageNet label's first synonym, lower-cased ("church, church building" -> "church")."""
    return label.split(",")[0].strip().lower()


class ImageNetClassDetector:
    """An object is present when an ImageNet-1k classifier's top-1 class is one of the concept's classes.

    `model`: hub id or local folder of any transformers image classifier with 1,000 ImageNet-1k labels; its
    id2label names for the concept's classes are checked against the shipped map (placeholder names such as
    'LABEL_497' cannot be checked and are reported on the card). `classes`: ImageNet indices that replace the map.
    """

    def __init__(
        self,
        concept: str,
        model: str = DEFAULT_CLASSIFIER,
        classes: Sequence[int] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
    ) -> None:
        if classes is None:
            wanted: dict[int, str | None] | None = imagenet_classes(concept)
            if wanted is None:
                raise ErasekitError(
                    f"no ImageNet classes for '{concept}': use one of {', '.join(imagenet_concepts())} "
                    "(or pass classes=[...])"
                )
        else:
            wanted = {int(i): None for i in classes}
        if not wanted:
            raise ErasekitError(f"no ImageNet classes given for '{concept}': pass at least one class index")
        self.concept, self.weights, self.batch_size = concept, model, batch_size
        self.device = torch.device(device or "cpu")
        self.model = _load(AutoModelForImageClassification.from_pretrained, model, "image classifier")
        self.model.to(self.device).eval()
        self.transform = ImageTransform.from_processor(
            _load(AutoImageProcessor.from_pretrained, model, "image processor")
        )
        self.classes, self.checked = self._check_labels(wanted)
        self._index = torch.tensor(sorted(self.classes))

    def _check_labels(self, wanted: dict[int, str | None]) -> tuple[dict[int, str], list[int]]:
        """({index: label}, indices whose label was checked against the model's id2label)."""
        config = self.model.config
        if config.num_labels != IMAGENET_CLASSES:
            raise ErasekitError(
                f"{self.weights} has {config.num_labels} classes, not ImageNet-1k's {IMAGENET_CLASSES}: "
                "pass an ImageNet-1k classifier"
            )
        labels, checked = {}, []
        for i, ours in sorted(wanted.items()):
            if not 0 <= i < IMAGENET_CLASSES:
                raise ErasekitError(f"ImageNet class {i} does not exist: use indices 0..{IMAGENET_CLASSES - 1}")
            theirs = config.id2label.get(i, f"LABEL_{i}")
            known = not re.fullmatch(r"LABEL_\d+", theirs)
            if known and ours is not None and _first_name(theirs) != _first_name(ours):
                raise ErasekitError(
                    f"{self.weights} calls class {i} '{theirs}', not '{ours}': its labels are not in ImageNet-1k's "
                    "standard order; pass a standard ImageNet-1k classifier"
                )
            labels[i] = ours if ours is not None else theirs
            if known:
                checked.append(i)
        return labels, checked

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) top-1 ImageNet class index."""
        _check_images(images)
        dtype = next(self.model.parameters()).dtype
        out = [
            self.model(pixel_values=self.transform(chunk.to(self.device)).to(dtype)).logits.argmax(-1).cpu()
            for chunk in images.split(self.batch_size)
        ]
        return torch.cat(out)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.isin(self.predict(images), self._index)

    def card(self) -> dict:
        return {
            "name": "ImageNet-1k classifier (top-1)",
            "version": f"transformers {_version('transformers')}",
            "weights": self.weights,
            "architecture": type(self.model).__name__,
            "concept": self.concept,
            "classes": [f"{i}: {label}" for i, label in self.classes.items()],
            "labels_checked": self.checked,
            "threshold": None,
            "rule": f"top-1 ImageNet-1k class in {sorted(self.classes)}",
            "preprocess": self.transform.card(),
        }


class ClipZeroShotDetector:
    """The concept is present when CLIP ranks the concept's prompt first among it and the alternatives' prompts.

    `alternatives`: a shipped list name ("styles", "people", "objects"; each with its own template) or the
    caller's own list (compared as written unless `template` is given); the concept itself is dropped from the
    alternatives. `template`: a "{}" pattern that overrides the list's, e.g. "a painting in the style of {}".
    """

    def __init__(
        self,
        concept: str,
        alternatives: Sequence[str] | str = "styles",
        model: str = DEFAULT_CLIP,
        template: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
    ) -> None:
        if isinstance(alternatives, str):
            names, list_template = zero_shot_list(alternatives)
            self.list_name = alternatives
        else:
            names, list_template, self.list_name = tuple(alternatives), CUSTOM_TEMPLATE, "custom"
        self.template = template or list_template
        if "{}" not in self.template:
            raise ErasekitError(f"template '{self.template}' has no '{{}}' for the concept: e.g. 'a photo of {{}}'")
        if not concept.strip():
            raise ErasekitError("the concept is empty: pass a name such as --concept 'Van Gogh'")
        others = [n for n in names if n.strip().lower() != concept.strip().lower()]
        if not others:
            raise ErasekitError(f"no alternatives to compare '{concept}' with: give at least one other name")
        self.concept, self.weights, self.batch_size = concept, model, batch_size
        self.candidates = [concept, *others]
        self.prompts = [self.template.format(c) for c in self.candidates]
        self.device = torch.device(device or "cpu")
        self.model = _load(CLIPModel.from_pretrained, model, "CLIP model").to(self.device).eval()
        processor = _load(CLIPProcessor.from_pretrained, model, "CLIP processor")
        self.transform = ImageTransform.from_processor(processor.image_processor)
        text = processor.tokenizer(self.prompts, padding=True, truncation=True, return_tensors="pt")
        self.text = {k: v.to(self.device) for k, v in text.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) index into self.candidates of CLIP's best-matching prompt (0 = concept)."""
        _check_images(images)
        dtype = next(self.model.parameters()).dtype
        out = []
        for chunk in images.split(self.batch_size):
            pixels = self.transform(chunk.to(self.device)).to(dtype)
            out.append(self.model(pixel_values=pixels, **self.text).logits_per_image.argmax(-1).cpu())
        return torch.cat(out)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images) == 0

    def card(self) -> dict:
        return {
            "name": "CLIP zero-shot",
            "version": f"transformers {_version('transformers')}",
            "weights": self.weights,
            "concept": self.concept,
            "alternatives": self.list_name,
            "template": self.template,
            "classes": list(self.candidates),
            "threshold": None,
            "rule": f"argmax of CLIP image-text similarity over {len(self.prompts)} prompts is "
            f"'{self.prompts[0]}' (the concept) rather than one of the alternatives",
            "preprocess": self.transform.card(),
        }
