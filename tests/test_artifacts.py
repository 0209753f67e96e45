"""One artifact argument: what `erasekit erase` writes (an ESD UNet, an AdvUnlearn text encoder, an ItD patch)
loads with `--artifact DIR` in generate, attack and evaluate; parts of different runs mix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import erasekit
from PIL import Image
from typer.testing import CliRunner

from erasekit.cli import _register_commands, app
from erasekit.errors import ErasekitError
from erasekit.methods import artifact_parts, erased_parts

TINY_X_T = ["--set", "cache_size=2", "--set", "ddim_steps=3"]
TRAIN = {  # a couple of steps each: the artifact's layout is what matters here
    "esd": ["--steps", "2", "--xt-mode", "cached", *TINY_X_T],
    "advunlearn": ["--steps", "2", "--warmup", "1", "--set", "attack.steps=2", *TINY_X_T],
    "itd": ["--set", "steps=10", "--set", "corpus_size=100", "--set", "calib_prompts=10", "--set", "select_prompts=8"],
}
PART = {"esd": "unet", "advunlearn": "text_encoder", "itd": "patch"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """{method: output folder of `erasekit erase --method METHOD --concept circle`}."""
    _register_commands()
    runner = CliRunner()
    out = {}
    for method, extra in TRAIN.items():
        folder = tmp_path_factory.mktemp(method)
        res = runner.invoke(app, ["erase", "--method", method, "--concept", "circle", "-o", str(folder), *extra])
        assert res.exit_code == 0, res.output
        out[method] = folder
    return out


@pytest.mark.parametrize("method", list(TRAIN))
def test_artifact_parts_recognise_each_method(artifacts, method) -> None:
    folder = artifacts[method]
    assert artifact_parts(folder) == {PART[method]: str(folder)}
    info = json.loads((folder / "erasekit.json").read_text())
    assert info["method"] == method


def test_explicit_parts_mix_runs_and_bad_folders_are_one_line_errors(artifacts, tmp_path) -> None:
    adv, itd = artifacts["advunlearn"], artifacts["itd"]
    mixed = erased_parts(adv, patch=itd)
    assert mixed == {"text_encoder": str(adv), "patch": str(itd)}
    assert erased_parts(adv, text_encoder=artifacts["esd"]) == {"text_encoder": str(artifacts["esd"])}  # flag wins
    assert erased_parts() == {}
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "empty", "holds no erasekit artifact"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(ErasekitError, match=message) as err:
            artifact_parts(folder)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", list(TRAIN))
def test_attack_and_evaluate_take_the_artifact(artifacts, method, tmp_path, monkeypatch, capsys) -> None:
    folder = artifacts[method]
    args = ["attack", "--artifact", folder, "--concept", "circle", "-n", "2", "--set", "soft.steps=2"]
    code, out, err, _ = erasekit(monkeypatch, capsys, *args, "--sample-steps", "2", "--json")
    assert code == 0, err
    attack = json.loads(out.strip().splitlines()[-1])
    assert attack["parts"] == {PART[method]: str(folder)} and attack["attacks"]["soft"]["n"] == 2
    assert attack["config"]["soft"]["steps"] == 2 and attack["config"]["sample_steps"] == 2
    args = ["evaluate", "--artifact", folder, "--concept", "circle", "--n-target", "2", "--n-retain", "2"]
    args += ["--n-world", "4", "--attacks", "none", "--sample-steps", "2", "-o", tmp_path, "--json"]
    code, out, err, _ = erasekit(monkeypatch, capsys, *args)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    part = result["protocol"]["model"]["parts"][PART[method]]
    assert part["folder"] == str(folder) and part["info"]["method"] == method  # what erase wrote about it
    assert "original_pre_attack_rate" in result["metrics"]  # the original model was loaded beside the artifact
    assert result["config"]["attacks"] == [] and "robustness" not in result["metrics"]  # --attacks none


def test_generate_takes_the_artifact_and_the_bad_folder_is_one_line(artifacts, tmp_path, monkeypatch, capsys) -> None:
    grids = {}
    for name, extra in {"original": [], "esd": ["--artifact", artifacts["esd"]]}.items():
        path = tmp_path / f"{name}.png"
        code, out, err, _ = erasekit(monkeypatch, capsys, "generate", "a red circle", "-n", "2", "--sample-steps", "4",
                                     "-o", path, "--json", *extra)  # fmt: skip
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1])["parts"] == ({"unet": str(artifacts["esd"])} if extra else {})
        grids[name] = np.asarray(Image.open(path), dtype=np.int16)
    assert np.abs(grids["esd"] - grids["original"]).max() > 0  # the erased UNet drew the images
    mix = ["--artifact", artifacts["advunlearn"], "--patch", artifacts["itd"]]  # parts of two runs
    code, out, err, _ = erasekit(monkeypatch, capsys, "generate", "a circle", "-n", "1", "--sample-steps", "1",
                                 "-o", tmp_path / "mix.png", "--json", *mix)  # fmt: skip
    assert code == 0, err
    parts = json.loads(out.strip().splitlines()[-1])["parts"]
    assert parts == {"text_encoder": str(artifacts["advunlearn"]), "patch": str(artifacts["itd"])}
    (tmp_path / "empty").mkdir()
    for cmd in (["generate", "a circle"], ["attack", "--concept", "circle"], ["evaluate", "--concept", "circle"]):
        code, _, err, errors = erasekit(monkeypatch, capsys, *cmd, "--artifact", tmp_path / "empty")
        assert code == 2 and len(errors) == 1 and "holds no erasekit artifact" in errors[0], err
