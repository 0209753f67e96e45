import json

import numpy as np
import pytest
import torch
from sd_fixture import IMAGE_SIZE, build_tiny_clip, build_tiny_resnet
from transformers import AutoImageProcessor, CLIPImageProcessor

from erasekit.errors import ErasekitError
from erasekit.eval.hf_detectors import (
    ClipZeroShotDetector,
    ImageNetClassDetector,
    ImageTransform,
    concept_kind,
    imagenet_classes,
    imagenet_concepts,
    zero_shot_list,
)
from erasekit.sd_prompts import advunlearn_objects, coco_like_prompts, templated_prompts, templates

VAN_GOGH = "a painting in the style of Van Gogh"


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) byte-exact images (multiples of 1/255) with low-frequency content, as generations have."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (up * 255).round() / 255


@pytest.fixture(scope="module")
def church_resnet(tmp_path_factory):
    return str(build_tiny_resnet(tmp_path_factory.mktemp("resnet") / "church", winner=497))


@pytest.fixture(scope="module")
def van_gogh_clip(tmp_path_factory):
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "vangogh", favour=VAN_GOGH))


def test_imagenet_detector_follows_the_top1_class(church_resnet):
    images = smooth_images(3, 48)
    church = ImageNetClassDetector("church", model=church_resnet)
    verdict = church(images)
    assert verdict.shape == (3,) and verdict.dtype == torch.bool and verdict.all()
    assert church.predict(images).tolist() == [497] * 3
    assert not ImageNetClassDetector("Parachute", model=church_resnet)(images).any()
    assert ImageNetClassDetector("anything", model=church_resnet, classes=[701, 497])(images).all()
    card = church.card()
    assert card["classes"] == ["497: church, church building"] and card["labels_checked"] == [497]
    assert card["weights"] == church_resnet and card["threshold"] is None and "497" in card["rule"]
    assert card["name"] and card["version"].startswith("transformers ")
    assert card["preprocess"]["short_edge"] == int(IMAGE_SIZE / 0.875) and card["preprocess"]["crop"] == [32, 32]


def test_imagenet_detector_errors_are_one_line(church_resnet, tmp_path):
    cases = [
        (lambda: ImageNetClassDetector("unicorn", model=church_resnet), "use one of tench, English springer"),
        (lambda: ImageNetClassDetector("church", model=str(tmp_path / "missing")), "does not exist"),
        (lambda: ImageNetClassDetector("church", model=str(tmp_path)), "is not a image classifier folder"),
        (lambda: ImageNetClassDetector("church"), "pass the local folder"),  # the hub id, offline
        (lambda: ImageNetClassDetector("x", model=church_resnet, classes=[1000]), "does not exist"),
    ]
    for make, message in cases:
        with pytest.raises(ErasekitError, match=message) as info:
            make()
        assert "\n" not in str(info.value)


def test_imagenet_detector_checks_the_label_order(tmp_path):
    folder = build_tiny_resnet(tmp_path / "shuffled")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"]["497"] = "parachute, chute"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ErasekitError, match="calls class 497 'parachute, chute', not 'church, church building'"):
        ImageNetClassDetector("church", model=str(folder))
    assert ImageNetClassDetector("tench", model=str(folder)).card()["labels_checked"] == [0]


@pytest.mark.parametrize("size", [IMAGE_SIZE, 41, 512])
def test_image_transform_matches_the_processors(church_resnet, size):
    images = smooth_images(2, size, seed=size)
    pil = [np.ascontiguousarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in images]
    processors = [
        AutoImageProcessor.from_pretrained(church_resnet),
        CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": 32, "width": 32}),
        CLIPImageProcessor(),  # openai/clip-vit-large-patch14's: 224, bicubic, centre crop
    ]
    for processor in processors:
        transform = ImageTransform.from_processor(processor)
        ours, theirs = transform(images), processor(pil, return_tensors="pt").pixel_values
        assert ours.shape == theirs.shape == (2, 3, *transform.crop)
        diff = (ours - theirs).abs()
        if transform.short_edge == size:  # CLIP's processor on 32x32 images resizes nothing: the same arithmetic
            assert diff.max() < 1e-5
        # torch's antialiased bicubic vs PIL's, which rounds to bytes: within two byte levels (1/255/std ~ 0.017)
        assert diff.mean() < 0.01 and diff.max() < 0.04


def test_clip_zero_shot_detector(van_gogh_clip):
    images = smooth_images(3, 40)
    van_gogh = ClipZeroShotDetector("van gogh", "styles", model=van_gogh_clip)
    verdict = van_gogh(images)
    assert verdict.shape == (3,) and verdict.dtype == torch.bool and verdict.all()
    assert not ClipZeroShotDetector("Pablo Picasso", "styles", model=van_gogh_clip)(images).any()
    styles, template = zero_shot_list("styles")
    card = van_gogh.card()
    assert card["template"] == template == "a painting in the style of {}" and card["alternatives"] == "styles"
    assert card["classes"][0] == "van gogh" and len(card["classes"]) == len(styles)  # the concept is not repeated
    assert card["weights"] == van_gogh_clip and card["threshold"] is None and "argmax" in card["rule"]
    own = ClipZeroShotDetector(
        "Van Gogh", ["Monet", "Van Gogh"], model=van_gogh_clip, template="a painting in the style of {}"
    )
    assert own.candidates == ["Van Gogh", "Monet"] and own.card()["alternatives"] == "custom" and own(images).all()


def test_clip_zero_shot_errors_are_one_line(van_gogh_clip, tmp_path):
    cases = [
        (lambda: ClipZeroShotDetector("x", "painters", model=van_gogh_clip), "use one of styles, people, objects"),
        (lambda: ClipZeroShotDetector("x", "styles", model=van_gogh_clip, template="a painting"), "has no '{}'"),
        (lambda: ClipZeroShotDetector("Monet", ["monet"], model=van_gogh_clip), "no alternatives"),
        (lambda: ClipZeroShotDetector("Monet", "styles", model=str(tmp_path / "missing")), "does not exist"),
        (lambda: ClipZeroShotDetector("Monet", "styles"), "pass the local folder"),  # the hub id, offline
    ]
    for make, message in cases:
        with pytest.raises(ErasekitError, match=message) as info:
            make()
        assert "\n" not in str(info.value)


def test_concept_kind():
    assert concept_kind("nudity") == "nudity"
    assert concept_kind("Church") == concept_kind("car") == concept_kind("bus") == "object"
    assert concept_kind("van gogh") == concept_kind("Kelly McKernan") == "style"
    assert concept_kind("taylor swift") == "person"
    assert concept_kind("circle") is None
    assert imagenet_classes("GARBAGE truck") == {569: "garbage truck, dustcart"} and imagenet_classes("bus") is None


def test_shipped_imagenet_map_is_consistent():
    table = imagenet_concepts()
    labels: dict[int, str] = {}
    for concept, classes in table.items():
        assert classes, concept
        for i, label in classes.items():
            assert 0 <= i < 1000 and labels.setdefault(i, label) == label  # one name per index across concepts
    assert {"church": 497, "garbage truck": 569, "parachute": 701, "tench": 0}.items() <= {
        c: next(iter(table[c])) for c in advunlearn_objects()
    }.items()
    assert len([c for c in table if len(table[c]) == 1]) >= 10 and len(table["car"]) > 1


def test_templated_prompts_are_seeded():
    prompts, seeds = templated_prompts("church", "object", 30, seed=3)
    assert (prompts, seeds) == templated_prompts("church", "object", 30, seed=3)
    assert len(prompts) == len(seeds) == 30 and all("church" in p for p in prompts)
    assert {p.replace("church", "{}") for p in prompts} == set(templates()["object"])  # every template is used
    assert len(set(seeds)) == 30 and all(0 <= s < 2**31 for s in seeds)
    other, other_seeds = templated_prompts("church", "object", 30, seed=4)
    assert other_seeds != seeds and other != prompts
    style, _ = templated_prompts("Van Gogh", "style", 5)
    assert all(p.endswith("in the style of Van Gogh") for p in style)
    for kind, n, message in [("animal", 3, "use one of object, style, person"), ("object", 0, "at least 1")]:
        with pytest.raises(ErasekitError, match=message):
            templated_prompts("church", kind, n)


def test_coco_like_prompts():
    captions = coco_like_prompts()
    assert len(captions) == len(set(captions)) == 100 and all(len(c.split()) >= 4 for c in captions)
