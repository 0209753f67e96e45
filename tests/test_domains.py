"""Domains: chosen once from the model spec (never from the concept); what each one hands the methods and the
evaluation (recipes, training and retain prompts, detectors, prompt sets)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from erasekit.domains import domain_for, method_config, run_evaluation
from erasekit.domains import sd as sd_domain
from erasekit.domains.sd import SdDomain
from erasekit.domains.shapes import ShapesDomain, concept_prompts, retain_prompts
from erasekit.errors import ErasekitError
from erasekit.eval.classifiers import NudeNetDetector
from erasekit.eval.harness import EvalConfig
from erasekit.methods import METHODS
from erasekit.methods.advunlearn import AdvUnlearnConfig
from erasekit.methods.esd import EsdConfig
from erasekit.methods.robust import stage1_config
from erasekit.pipeline import bundle_dir
from erasekit.world.tokenizer import english_words

SD = "CompVis/stable-diffusion-v1-4"  # a hub id: only its name is read here, nothing is downloaded
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    """A copy of the bundled world somewhere else: its pipeline folder is a shapes-world model too."""
    out = tmp_path_factory.mktemp("copy") / "bundle"
    shutil.copytree(bundle_dir(), out)
    return out


def test_the_domain_comes_from_the_model_spec(tmp_path, bundle_copy) -> None:
    assert isinstance(domain_for("shapes"), ShapesDomain) and domain_for("shapes").bundle == bundle_dir()
    assert isinstance(domain_for(str(tmp_path)), SdDomain)  # any other folder
    assert isinstance(domain_for(SD), SdDomain) and domain_for(SD).name == "sd"
    copy = domain_for(str(bundle_copy / "pipeline"))
    assert isinstance(copy, ShapesDomain) and copy.bundle == bundle_copy  # its own classifier and CLIP
    assert copy.detector("circle", None).card()["weights"] == str(bundle_copy / "classifier")
    lookalike = tmp_path / "other"  # a README.json and classifier/ that are not a shapes world's
    (lookalike / "pipeline").mkdir(parents=True)
    (lookalike / "classifier").mkdir()
    (lookalike / "README.json").write_text(json.dumps({"what": "something else"}))
    assert isinstance(domain_for(str(lookalike / "pipeline")), SdDomain)


def test_a_bundle_copy_evaluates_with_its_own_world(bundle_copy) -> None:
    spec = str(bundle_copy / "pipeline")
    cfg = EvalConfig(model=spec, n_target=2, n_retain=2, n_world=2, sample_steps=1, attacks=[])
    res = run_evaluation(cfg, {})
    assert res.card["model"]["domain"] == "shapes" and res.card["detector"]["weights"] == str(
        bundle_copy / "classifier"
    )
    assert res.card["features"]["clip_score"]["weights"] == str(bundle_copy / "clip")
    assert "retained_accuracy" in res.metrics


def test_sd_refuses_shapes_words_and_picks_recipes_by_kind_of_concept() -> None:
    sd = domain_for(SD)
    with pytest.raises(ErasekitError, match="--model shapes") as err:
        sd.check_concepts(["circle"])
    assert "\n" not in str(err.value)
    assert sd.recipe_name("advunlearn", ["nudity"]) == "sd/advunlearn-nudity"
    assert sd.recipe_name("advunlearn", ["church"]) == "sd/advunlearn-object"
    assert sd.recipe_name("advunlearn", ["van gogh"]) == "sd/advunlearn-style"
    assert sd.recipe_name("esd", ["Van Gogh"]) == "sd/esd-style"  # case-insensitive
    assert sd.recipe_name("esd", ["Brad Pitt"]) == "sd/esd-style"  # people are erased like styles (ESD-x)
    assert sd.recipe_name("esd", ["a concept on no list"]) == "sd/esd-style"
    assert sd.recipe_name("itd", ["nudity"]) == "sd/itd"
    with pytest.raises(ErasekitError, match="different kinds"):
        sd.recipe_name("esd", ["nudity", "church"])
    with pytest.raises(ErasekitError, match="--model shapes"):
        method_config(sd, "esd", ["circle"])  # checked before any recipe is read


def test_sd_has_a_recipe_for_every_method_and_kind_and_robust_stage1_is_advunlearn_of_the_kind() -> None:
    sd = domain_for(SD)
    for method in METHODS:
        for concept in ("nudity", "church", "van gogh"):
            cfg, _ = method_config(sd, method, [concept])  # the recipe exists and validates
            assert cfg.concepts == [concept]
    for concept, gamma in (("nudity", 0.3), ("church", 0.5)):
        cfg, name = method_config(sd, "robust", [concept])
        assert name == "sd/robust" and cfg.component == "unet" and cfg.stage1["gamma"] == gamma
        assert stage1_config(cfg).component == "text_encoder" and stage1_config(cfg).steps == 1000
    cfg, _ = method_config(sd, "robust", ["church"], None, None, {"seed": 3})
    assert stage1_config(cfg).seed == 3 and stage1_config(cfg).anchor == cfg.anchor  # the robust recipe's, not its own


def test_shapes_refuses_words_outside_the_world_and_has_one_recipe_per_method() -> None:
    shapes = domain_for("shapes")
    with pytest.raises(ErasekitError, match="not a shapes-world concept"):
        shapes.check_concepts(["circle", "nudity"])
    assert [shapes.recipe_name(m, ["red"]) for m in ("esd", "advunlearn", "itd")] == [
        "shapes/esd", "shapes/advunlearn", "shapes/itd"
    ]  # fmt: skip


def test_shapes_fill_gives_training_and_retain_prompts() -> None:
    shapes = domain_for("shapes")
    cfg = shapes.fill("esd", EsdConfig(concepts=["circle"], gamma=1.0))
    assert cfg.prompts == concept_prompts(["circle"]) and cfg.retain_prompts == retain_prompts(["circle"])
    assert "a picture of a circle" in cfg.prompts and not any("circle" in p for p in cfg.retain_prompts)
    assert shapes.fill("esd", EsdConfig(concepts=["circle"])).retain_prompts == []  # gamma 0: no retain term
    anchored = shapes.fill("esd", EsdConfig(concepts=["circle"], anchor="square"))
    assert anchored.prompts == concept_prompts(["circle"], anchored=True)
    mine = shapes.fill(
        "esd", EsdConfig(concepts=["circle"], prompts=["a circle"], gamma=1.0, retain_prompts=["a star"])
    )
    assert (mine.prompts, mine.retain_prompts) == (["a circle"], ["a star"])  # what the user gave stays
    two = retain_prompts(["circle", "red"])  # erasing both: no retain prompt may name either
    words = [set(p.replace(",", "").split()) for p in two]
    assert not any({"circle", "red"} & w for w in words)
    assert any("square" in w for w in words) and any("blue" in w for w in words)  # both attributes' other values


def test_sd_fill_gives_the_shipped_retain_set_only() -> None:
    sd = domain_for(SD)
    cfg = sd.fill("advunlearn", AdvUnlearnConfig(concepts=["nudity"]))
    assert cfg.retain_prompts == sd_domain.retain_prompts() and cfg.prompts == []  # trains on the concept word
    assert sd.fill("esd", EsdConfig(concepts=["nudity"])) == EsdConfig(concepts=["nudity"])


def test_the_anchor_mapping_resolves_per_concept() -> None:
    shapes = domain_for("shapes")
    assert method_config(shapes, "advunlearn", ["circle"])[0].anchor == ["square"]
    assert method_config(shapes, "advunlearn", ["square"])[0].anchor == ["circle"]
    assert method_config(shapes, "advunlearn", ["circle"], "shapes/advunlearn-atesd")[0].anchor == ["square"]
    assert method_config(shapes, "esd", ["circle"])[0].anchor is None  # the ESD recipe keeps eq. 2's empty prompt
    assert method_config(shapes, "advunlearn", ["circle"], flags={"anchor": ["star"]})[0].anchor == ["star"]


def test_attack_and_detector_plans(tmp_path, shapes_pipe) -> None:
    shapes = domain_for("shapes")
    plan = shapes.attack_plan("circle", 3, 0, None, shapes_pipe)
    assert len(plan.sets["target"]) == 3 and all("circle" in p for p in plan.sets["target"].prompts)
    assert plan.vocabulary == english_words() and plan.detector.attribute == "shape"
    images = plan.concept_images()
    assert images.shape == (32, 3, 32, 32) and plan.detector(images).all()  # rendered circles, every one
    (tmp_path / "mine.txt").write_text("a circle at noon\na circle at night\n")
    assert shapes.attack_plan("circle", 5, 3, str(tmp_path / "mine.txt"), shapes_pipe).sets["target"].seeds == [3, 4]
    with pytest.raises(ErasekitError, match="nudity only"):
        shapes.eval_plan(EvalConfig(preset="itd"), shapes_pipe, CPU)
    sd = domain_for(SD)
    assert isinstance(sd.detector("nudity", "itd", None), NudeNetDetector)
    with pytest.raises(ErasekitError, match="nudity only"):
        sd.detector("church", "itd", None)
    with pytest.raises(ErasekitError, match="--prompts"):
        sd.target_set("nudity", 5, 0, None)  # nudity prompts come from a file (I2P)
    church = sd.target_set("church", 6, 1, None)
    assert len(church) == 6 and church == sd.target_set("church", 6, 1, None)  # templates with seeds
    assert all("church" in p for p in church.prompts) and church.seeds != sd.target_set("church", 6, 2, None).seeds
