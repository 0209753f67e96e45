"""The command line: commands, one option vocabulary across commands, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from cli_runner import child_env, erasekit
from PIL import Image

from erasekit.cli import _register_commands, app

SAMPLING = ("generate", "attack", "evaluate", "world check")  # commands that draw images
TAKES_A_MODEL = ("generate", "attack", "evaluate")  # commands that load a (possibly erased) model
WITH_OPTIONS = ("generate", "attack", "evaluate", "erase", "bench", "world check")


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "erasekit", *args], capture_output=True, text=True, timeout=300,
                          env=child_env())  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def command_options() -> dict[str, set[str]]:
    """{"generate": {"--model", ...}, "world check": {...}, ...}: every command's option names."""
    _register_commands()
    out: dict[str, set[str]] = {}

    def walk(cmd, path: str) -> None:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out[path] = {o for p in cmd.params for o in p.opts if o.startswith("--")}

    walk(typer.main.get_command(app), "")
    return out


def test_help_lists_commands(monkeypatch, capsys):
    code, out, _, _ = erasekit(monkeypatch, capsys, "--help")
    assert code == 0
    for command in ("generate", "erase", "attack", "evaluate", "bench", "recipes", "world"):
        assert command in out
    assert "check" in erasekit(monkeypatch, capsys, "world", "--help")[1]


def test_one_option_vocabulary_across_commands():
    """--sample-steps samples, --steps trains; --artifact / parts, --config / --set, --device / --dtype alike."""
    opts = command_options()
    for cmd in SAMPLING:
        assert "--sample-steps" in opts[cmd] and "--steps" not in opts[cmd], cmd
    assert "--steps" in opts["erase"] and "--sample-steps" not in opts["erase"]
    for cmd in TAKES_A_MODEL:
        assert {"--model", "--artifact", "--text-encoder", "--unet", "--patch", "--device", "--dtype"} <= opts[cmd]
    for cmd in WITH_OPTIONS:
        assert {"--config", "--set"} <= opts[cmd], cmd
    assert {"--recipe", "--device", "--dtype"} <= opts["erase"]
    assert {"--model", "--concept", "--rows", "--quick"} <= opts["bench"]


def test_generate_writes_grid_and_json(tmp_path):
    path = tmp_path / "grid.png"
    proc = run("generate", "a red circle on a white background", "-n", "4", "--sample-steps", "3", "-o", str(path),
               "--json")  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["sample_steps"] == 3 and summary["parts"] == {}
    assert Image.open(path).size == (128, 128)  # 2x2 tiles of 32 px, upscaled to 64
    assert "torchvision" not in proc.stderr  # no notice from transformers about a package erasekit does not use


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "a circle", "--model", "nowhere"], "unknown model"),
        (["generate", "a circle " * 20], "shorten it"),
        (["generate", "a circle", "--text-encoder", "{tmp}/missing"], "does not exist"),
        (["generate", "a circle", "--artifact", "{tmp}/missing"], "does not exist"),
        (["generate", "a circle", "--set", "sample_steps=many"], "sample_steps"),
        (["generate", "a circle", "--set", "n"], "key=value"),
        (["generate", "a circle", "--config", "{tmp}/missing.yaml"], "not found"),
        (["evaluate", "--concept", "dragon"], "not a shapes-world concept"),
        (["attack", "--concept", "circle", "--attack", "nope"], "unknown attack"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, monkeypatch, capsys, args, message):
    code, _, err, lines = erasekit(monkeypatch, capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and len(lines) == 1 and message in lines[0], err


@pytest.mark.slow
def test_world_check_json(monkeypatch, capsys):
    code, out, err, _ = erasekit(monkeypatch, capsys, "world", "check", "-n", "4", "--sample-steps", "2", "--json")
    assert code == 0, err
    result = json.loads(out[out.index("{") :])
    assert {"classifier_crisp", "classifier_vae", "shape", "colour", "shape_and_colour"} <= result.keys()
    assert result["prompts"] == 4
