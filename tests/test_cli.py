import json
import subprocess
import sys

from PIL import Image


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "erasekit", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_commands():
    out = run("--help").stdout
    for command in ("generate", "world"):
        assert command in out
    assert "check" in run("world", "--help").stdout


def test_generate_writes_grid_and_json(tmp_path):
    path = tmp_path / "grid.png"
    proc = run("generate", "a red circle on a white background", "-n", "4", "--steps", "3", "-o", str(path), "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["steps"] == 3
    assert Image.open(path).size == (128, 128)  # 2x2 tiles of 32 px, upscaled to 64


def test_bad_inputs_give_one_line_errors(tmp_path):
    cases = [
        (["generate", "a circle", "--model", "nowhere"], "unknown model"),
        (["generate", "a circle " * 20], "shorten it"),
        (["generate", "a circle", "--text-encoder", str(tmp_path / "missing")], "does not exist"),
    ]
    for args, message in cases:
        proc = run(*args, check=False)
        assert proc.returncode == 2
        lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_world_check_json():
    proc = run("world", "check", "-n", "4", "--steps", "2", "--json")
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert {"classifier_crisp", "classifier_vae", "shape", "colour", "shape_and_colour"} <= result.keys()
    assert result["prompts"] == 4
