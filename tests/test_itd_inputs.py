"""ItD's inputs: the check before training, the shapes domain's prompt sets (unchanged by the move out of
methods/itd), the SD domain's shipped lists, and the recipes holding every ItdConfig option."""

import dataclasses
import hashlib
import json
from importlib import resources

import pytest
import yaml

from erasekit.domains.sd_itd import sd_itd_inputs, shipped_concepts
from erasekit.domains.shapes_itd import shapes_itd_inputs
from erasekit.errors import ErasekitError
from erasekit.methods import itd
from erasekit.methods.itd import ItdConfig, ItdInputs, erase
from erasekit.skeleton import sd_pipeline
from erasekit.world.prompt_sets import target_set

RECIPES = resources.files("erasekit").joinpath("recipes")


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


def inputs(**changes) -> ItdInputs:
    """Complete inputs for concept "c" (retain "r"), with `changes` applied."""
    sides = ({"c": (["with c"], ["without c"])}, (["with c"], ["without c"]))
    full = ItdInputs(
        ["a corpus prompt"],
        {"c": ["with c"]},
        {"r": ["with r"]},
        {"c": ["r"]},
        {"calibration": sides, "heldout": sides},
    )
    return dataclasses.replace(full, **changes)


class Untouchable:
    """A pipeline stand-in: any use of it means work started before the inputs were checked."""

    def __getattr__(self, name):
        raise AssertionError(f"pipeline used ({name}) before the inputs were checked")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"gate": None}, "gate needs prompts with and without \\['c'\\]"),
        ({"gate": {"calibration": ({}, (["x"], ["y"])), "heldout": ({}, (["x"], ["y"]))}}, "gate needs"),
        ({"corpus": []}, "prompt corpus"),
        ({"concept_prompts": {}}, "feature selection"),
        ({"retain_prompts": {}}, "retain concept"),
        ({"retain": {}}, "retain concepts given"),
    ],
)
def test_missing_inputs_fail_before_training(tmp_path, monkeypatch, changes, match):
    monkeypatch.setattr(itd, "train_layer_sae", Untouchable())
    with pytest.raises(ErasekitError, match=match) as e:
        erase(Untouchable(), ItdConfig(concepts=["c"]), tmp_path, inputs(**changes), progress=False)
    one_line(e)


def test_complete_inputs_pass_and_optional_pieces_may_be_missing():
    inputs().check(["c"])
    inputs(gate=None).check(["c"], gate=False)
    inputs(corpus=[]).check(["c"], corpus=False)  # a reused SAE needs no corpus
    inputs(retain={"c": []}, retain_prompts={}).check(["c"])  # no retain concepts: eq. 5 removes nothing


def test_sd_concept_without_prompts_fails_before_training(tmp_path):
    cfg = ItdConfig(concepts=["brad pitt"])
    with pytest.raises(ErasekitError, match="--set target_prompts=FILE") as e:
        sd_itd_inputs(cfg.concepts, cfg)
    assert "other_prompts" in one_line(e) and "nudity" in str(e.value)
    (tmp_path / "with.txt").write_text("\n".join(f"a portrait of brad pitt number {i}" for i in range(10)))
    (tmp_path / "without.txt").write_text("\n".join(f"a portrait of a man number {i}" for i in range(10)))
    files = {"target_prompts": str(tmp_path / "with.txt"), "other_prompts": str(tmp_path / "without.txt")}
    got = sd_itd_inputs(cfg.concepts, cfg.model_copy(update=files))
    got.check(cfg.concepts)
    assert got.retain == {"brad pitt": []}  # unknown kind: retain concepts only when set
    per, whole = got.gate["calibration"]
    assert len(per["brad pitt"][0]) == 5 == len(whole[1]) and set(got.concept_prompts["brad pitt"]) <= set(
        per["brad pitt"][0]
    )
    with pytest.raises(ErasekitError, match="one concept"):
        sd_itd_inputs(["brad pitt", "nudity"], ItdConfig(concepts=["brad pitt", "nudity"], **files))


def test_shapes_inputs_are_the_previous_prompt_sets():
    cfg = ItdConfig(concepts=["circle", "red"], select_prompts=8, calib_prompts=12, corpus_size=50, seed=3)
    got = shapes_itd_inputs(cfg.concepts, cfg)
    # sha256 of the same lists built by the functions that lived in erasekit/methods/itd before the domain layer
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(got), sort_keys=True).encode()).hexdigest()
    assert digest == "784e4d32423aae1018b6f024706e5a8c186c7c86754883a9aaf29f9a9e42c552"
    assert got.corpus[:2] == [
        "a picture of a red circle on a white background",
        "a picture of a purple cross on a black background",
    ]
    assert got.concept_prompts["circle"] == target_set("circle", 8, "train", 3 + 100).prompts
    assert got.retain_prompts["blue"] == target_set("blue", 8, "train", 3 + 150).prompts  # first name in sorted order
    assert got.retain == {
        "circle": ["square", "triangle", "cross", "star"],
        "red": ["green", "blue", "yellow", "purple", "orange"],
    }
    per, whole = got.gate["heldout"]
    assert per["circle"][1][:2] == [
        "a simple green cross shown on a white background",
        "there is a red square on a plain gray backdrop",
    ]
    assert not any("circle" in p for p in per["circle"][1]) and not any("red " in p for p in whole[1])
    assert len(whole[0]) == 24 and len(per["red"][0]) == 12
    assert shapes_itd_inputs(cfg.concepts, cfg.model_copy(update={"gate": False})).gate is None
    with pytest.raises(ErasekitError, match="not a shapes-world concept"):
        shapes_itd_inputs(["church"], cfg)


@pytest.mark.parametrize("concept", ["nudity", "church", "Van Gogh"])
def test_sd_inputs_from_shipped_lists(concept):
    cfg = ItdConfig(concepts=[concept], select_prompts=16, calib_prompts=100)
    got = sd_itd_inputs(cfg.concepts, cfg)
    got.check(cfg.concepts)
    assert len(got.corpus) > 300 and got.corpus == sd_itd_inputs(cfg.concepts, cfg).corpus
    assert len(got.concept_prompts[concept]) == 16 and concept not in got.concept_prompts[concept]  # not the bare word
    retain = got.retain[concept]
    assert retain and concept.lower() not in retain and all(len(got.retain_prompts[r]) >= 8 for r in retain)
    if concept == "nudity":
        assert retain == ["clothed people"]
    if concept == "church":
        assert {"parachute", "garbage truck", "tench"} <= set(retain)
    cal, held = got.gate["calibration"][0][concept], got.gate["heldout"][0][concept]
    assert set(cal[0]).isdisjoint(held[0]) and set(cal[1]).isdisjoint(held[1])  # held out means held out
    assert set(got.concept_prompts[concept]) <= set(cal[0])
    words = {"nudity": ("nude", "naked", "topless"), "church": ("church",), "Van Gogh": ("van gogh",)}[concept]
    assert all(any(w in p.lower() for w in words) for p in cal[0] + held[0])
    assert not any(w in p.lower() for w in words for p in cal[1] + held[1])


def test_sd_patch_targets_are_each_others_negatives():
    cfg = ItdConfig(concepts=["church", "parachute"])
    got = sd_itd_inputs(cfg.concepts, cfg)
    per, whole = got.gate["calibration"]
    assert "parachute" not in got.retain["church"] and "church" not in got.retain["parachute"]
    assert any("parachute" in p for p in per["church"][1]) and any("church" in p for p in per["parachute"][1])
    assert not any("church" in p or "parachute" in p for p in whole[1])
    assert {"church", "nudity", "clothed people", "van gogh", "tench"} <= set(shipped_concepts())


def test_recipes_hold_every_option():
    fields = set(ItdConfig.model_fields) - {"concepts"}  # the concepts come from the command line
    for domain in ("shapes", "sd"):
        recipe = yaml.safe_load(RECIPES.joinpath(domain, "itd.yaml").read_text())
        assert set(recipe) == fields, domain
        ItdConfig(concepts=["x"], **recipe)
    shapes = yaml.safe_load(RECIPES.joinpath("shapes", "itd.yaml").read_text())
    assert ItdConfig(concepts=["x"], **shapes) == ItdConfig(concepts=["x"])  # the values the shapes figures used
    sd = yaml.safe_load(RECIPES.joinpath("sd", "itd.yaml").read_text())
    assert sd["layer"] == 8 and sd["width"] >= 4 * 768 and sd["k"] == 32


def test_itd_on_an_sd_shaped_model_with_shipped_prompts(tmp_path):
    pipe = sd_pipeline("tiny")  # SD v1.4's structure (12 text-encoder layers, the real tokenizer) at width 32
    recipe = yaml.safe_load(RECIPES.joinpath("sd", "itd.yaml").read_text())
    small = {"width": 64, "k": 4, "aux_k": 16, "steps": 20, "batch_size": 256, "k_sel": 8}
    cfg = ItdConfig(concepts=["nudity"], **{**recipe, **small})
    summary = erase(pipe, cfg, tmp_path, sd_itd_inputs(cfg.concepts, cfg), progress=False)
    assert summary["layer"] == 8 and summary["retain"] == {"nudity": ["clothed people"]}
    assert summary["sae"]["tokens"] == summary["sae"]["prompts"] * 76  # 77 positions, BOS left out
    held = summary["gate"]["heldout"]
    assert held["n_target"] == 24 and held["n_others"] > held["n_target"]
    assert set(itd.ItdPatch.load(tmp_path).thresholds) == {"nudity"}
