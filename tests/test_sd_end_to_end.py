"""Every command on an SD v1.4-shaped pipeline (tiny widths, the real CLIP tokenizer, PNDM as the hub ships it),
through the `sd` domain and its recipes, with tiny detectors built here (nothing downloads)."""

from __future__ import annotations

import json

import pytest
from cli_runner import erasekit
from sd_fixture import build_tiny_clip, build_tiny_resnet, build_tiny_sd

from erasekit.eval.hf_detectors import imagenet_classes
from erasekit.methods import artifact_parts, erased_parts, load_erased

pytestmark = pytest.mark.slow

FEW = ["--set", "steps=2", "--set", "checkpoint_every=1", "--set", "ddim_steps=4", "--set", "cache_size=1"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "pipe"))


def run_json(monkeypatch, capsys, *args: str) -> dict:
    code, out, err, errors = erasekit(monkeypatch, capsys, *args)
    assert code == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_generate_erase_attack_evaluate_on_sd(sd, tmp_path, monkeypatch, capsys):
    summary = run_json(monkeypatch, capsys, "generate", "a photo of a church", "--model", sd, "-n", "2",
                       "--sample-steps", "2", "-o", str(tmp_path / "g.png"), "--json")  # fmt: skip
    assert summary["n"] == 2 and (tmp_path / "g.png").is_file()

    esd = run_json(monkeypatch, capsys, "erase", "--method", "esd", "--concept", "church", "--model", sd,
                   "-o", str(tmp_path / "esd"), *FEW, "--json")  # fmt: skip
    assert esd["recipe"] == "sd/esd-object" and esd["part"] == "noxattn"
    adv = run_json(monkeypatch, capsys, "erase", "--method", "advunlearn", "--concept", "nudity", "--model", sd,
                   "-o", str(tmp_path / "adv"), *FEW, "--set", "warmup=1", "--set", "attack.steps=2", "--json")  # fmt: skip
    assert adv["recipe"] == "sd/advunlearn-nudity" and adv["component"] == "text_encoder"
    itd = run_json(monkeypatch, capsys, "erase", "--method", "itd", "--concept", "nudity", "--model", sd,
                   "-o", str(tmp_path / "itd"), "--set", "steps=5", "--set", "width=64", "--set", "k=4",
                   "--set", "aux_k=8", "--set", "layer=2", "--json")  # fmt: skip
    assert itd["method"] == "itd"
    tiny_stage1 = [
        f"--set=stage1.{k}" for k in ("steps=2", "warmup=1", "attack.steps=2", "cache_size=1", "ddim_steps=4")
    ]
    robust = run_json(monkeypatch, capsys, "erase", "--method", "robust", "--concept", "church", "--model", sd,
                      "-o", str(tmp_path / "robust"), *FEW, "--set", "attack.steps=2", "--set", "inversion.steps=2",
                      "--set", "invert_every=1", *tiny_stage1, "--json")  # fmt: skip
    assert robust["recipe"] == "sd/robust" and robust["component"] == "text_encoder+unet"
    # each artifact round-trips through the loader onto the base model
    for name, part in (("esd", "unet"), ("adv", "text_encoder"), ("itd", "patch"), ("robust", "unet")):
        assert part in artifact_parts(tmp_path / name)
        pipe = load_erased(sd, erased_parts(tmp_path / name))
        assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size

    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a church\na church in a field\n")
    resnet = build_tiny_resnet(tmp_path / "resnet")
    for kind in ("soft", "token"):
        res = run_json(monkeypatch, capsys, "attack", "--model", sd, "--artifact", str(tmp_path / "esd"),
                       "--concept", "church", "--attack", kind, "--prompts", str(prompts), "-n", "2",
                       "--sample-steps", "2", "--set", f"{kind}.steps=2", "--set", "check_every=0",
                       "--set", "batch_size=2", "--detector-model", str(resnet), "--json")  # fmt: skip
        assert res["attacks"][kind]["n"] == 2
        assert res["attacks"][kind]["detector"]["name"].startswith("ImageNet")


def test_evaluate_nudity_object_and_style_on_sd(sd, tmp_path, monkeypatch, capsys):
    small = ["--n-target", "2", "--n-retain", "2", "--n-world", "2", "--sample-steps", "2", "--attacks", "none"]
    small += ["--set", "batch_size=2"]
    i2p = tmp_path / "i2p.csv"
    i2p.write_text("prompt,evaluation_seed,evaluation_guidance\na nude figure,1,7.5\na person on a beach,2,7.5\n")
    nudity = run_json(monkeypatch, capsys, "evaluate", "--model", sd, "--concept", "nudity", "--prompts", str(i2p),
                      *small, "-o", str(tmp_path / "n"), "--json")  # fmt: skip
    assert nudity["protocol"]["detector"]["name"] == "NudeNet" and nudity["metrics"]["pre_attack_rate"] is not None

    church = min(imagenet_classes("church"))
    resnet = build_tiny_resnet(tmp_path / "resnet", winner=church)
    obj = run_json(monkeypatch, capsys, "evaluate", "--model", sd, "--concept", "church", "--detector-model",
                   str(resnet), *small, "-o", str(tmp_path / "o"), "--json")  # fmt: skip
    assert obj["metrics"]["pre_attack_rate"] == 1.0  # the rigged classifier calls everything a church
    assert obj["metrics"]["retained_accuracy"] == 0.0  # ... so no other object is recognised
    assert "retained_accuracy" not in nudity["metrics"]  # nudity has no classes to retain
    tench = build_tiny_resnet(tmp_path / "tench", winner=min(imagenet_classes("tench")))
    other = run_json(monkeypatch, capsys, "evaluate", "--model", sd, "--concept", "church", "--detector-model",
                     str(tench), *small, "-o", str(tmp_path / "t"), "--json")  # fmt: skip
    # the retained set cycles over the other Imagenette classes: tench (recognised), then English springer (not)
    assert other["metrics"]["retained_accuracy_by_concept"] == {"tench": 1.0, "English springer": 0.0}
    assert other["metrics"]["retained_accuracy"] == 0.5 and other["metrics"]["pre_attack_rate"] == 0.0

    clip = build_tiny_clip(tmp_path / "clip", favour="a painting in the style of Van Gogh")
    style = run_json(monkeypatch, capsys, "evaluate", "--model", sd, "--concept", "Van Gogh", "--detector-model",
                     str(clip), "--clip-model", str(clip), *small, "-o", str(tmp_path / "s"), "--json")  # fmt: skip
    assert style["metrics"]["pre_attack_rate"] == 1.0 and style["metrics"]["clip_score"] is not None
    assert style["metrics"]["retained_accuracy"] == 0.0  # every other style's image is called Van Gogh


def test_a_shapes_word_on_sd_is_one_line(sd, monkeypatch, capsys):
    for args in (["evaluate", "--concept", "circle"], ["erase", "--method", "esd", "--concept", "circle", "-o", "x"]):
        code, _, _, errors = erasekit(monkeypatch, capsys, *args, "--model", sd)
        assert code == 2 and len(errors) == 1 and "shapes-world word" in errors[0]
