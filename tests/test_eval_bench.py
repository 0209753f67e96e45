"""`erasekit bench` with tiny schedules on the bundled world: rows, reuse of artifacts, same numbers for a seed."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

CONFIG = {
    "rows": ["Original", "ESD", "ItD"],
    "methods": {
        "ESD": {
            "steps": 3,
            "xt_mode": "cached",
            "cache_size": 2,
            "ddim_steps": 4,
            "component": "text_encoder",
            "part": "all",
            "lr": 1e-3,
        },  # fmt: skip
        "ItD": {"corpus_size": 100, "steps": 10, "calib_prompts": 10, "select_prompts": 8},
    },
    "evaluation": {"n_target": 3, "n_retain": 3, "n_world": 4, "steps": 2, "attacks": []},
}


def run_bench(tmp_path, out):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    args = [sys.executable, "-m", "erasekit", "bench", "--world", "shapes", "--concept", "circle"]
    proc = subprocess.run([*args, "--config", str(cfg), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "bench.json").read_text())


def test_bench_table_reuse_and_reproducibility(tmp_path) -> None:
    stdout, first = run_bench(tmp_path, tmp_path / "a")
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| Original", "| ESD", "| ItD"]
    rows = first["rows"]
    assert rows["ESD"]["protocol"]["model"]["text_encoder"].endswith("ESD")
    assert rows["ItD"]["protocol"]["model"]["patch"].endswith("ItD")
    assert rows["ESD"]["metrics"]["training"]["unet_rows"] > 0 and not rows["ESD"]["metrics"]["training"]["reused"]
    assert (tmp_path / "a" / "report.html").stat().st_size > 10_000
    _, again = run_bench(tmp_path, tmp_path / "a")  # same folder: artifacts are reused, not retrained
    assert again["rows"]["ESD"]["metrics"]["training"]["reused"]
    _, fresh = run_bench(tmp_path, tmp_path / "b")  # a fresh run with the same seed gives the same numbers
    strip = lambda m: {k: v for k, v in m.items() if k not in ("wall_s", "training")}  # noqa: E731
    for row in CONFIG["rows"]:
        assert strip(fresh["rows"][row]["metrics"]) == strip(first["rows"][row]["metrics"]), row
