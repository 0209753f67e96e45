"""`erasekit bench` on the bundled world: rows, the config hash that guards reused artifacts, the demo table's
options, and (slow) the whole table with tiny schedules: reused artifacts and evaluations, same numbers for a seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_runner import erasekit

import erasekit.bench as bench
from erasekit.attacks import ATTACKS
from erasekit.bench import SUMMARY, BenchConfig, demo_config, train_row
from erasekit.bench.docs import section
from erasekit.config import config_hash
from erasekit.domains import domain_for, method_config
from erasekit.errors import ErasekitError

OLD = json.loads((Path(__file__).parent / "data" / "old_shapes_configs.json").read_text())
CONFIG = {
    "rows": ["Original", "ESD", "ItD"],
    "methods": {
        "ESD": {"steps": 3, "xt_mode": "cached", "cache_size": 2, "ddim_steps": 4, "component": "text_encoder",
                "part": "all", "lr": 1e-3},
        "ItD": {"corpus_size": 100, "steps": 10, "calib_prompts": 10, "select_prompts": 8},
    },
    "evaluation": {"n_target": 3, "n_retain": 3, "n_world": 4, "sample_steps": 2, "attacks": []},
}  # fmt: skip


def finished_row(folder: Path, config_sha256: str) -> None:
    """A row folder as a finished bench run leaves it (only the summary matters for reuse)."""
    folder.mkdir(parents=True)
    (folder / SUMMARY).write_text(json.dumps({"config_sha256": config_sha256, "unet_rows": 7, "seconds": 1.0}))


def esd_row_config(cfg: BenchConfig):
    options = {"seed": cfg.seed, **cfg.methods.get("ESD", {})}
    return method_config(domain_for("shapes"), "esd", [cfg.concept], "shapes/esd-paper", None, options)[0]


def test_a_row_folder_is_reused_only_for_the_same_config(tmp_path, monkeypatch) -> None:
    """The defect of issue 14: any folder holding bench-train.json was reused, even after the recipe changed."""

    def no_training(*a, **k):
        raise AssertionError("a finished row with the same config must not be retrained")

    monkeypatch.setattr(bench, "run_method", no_training)
    cfg = BenchConfig(methods={"ESD": {"steps": 5}})
    same = tmp_path / "same"
    finished_row(same, config_hash(esd_row_config(cfg)))
    assert train_row("ESD", cfg, same, progress=False)["reused"] is True
    other = tmp_path / "other"
    finished_row(other, config_hash(esd_row_config(BenchConfig(methods={"ESD": {"steps": 6}}))))
    with pytest.raises(ErasekitError, match="other options") as err:
        train_row("ESD", cfg, other, progress=False)
    assert str(other) in str(err.value) and "\n" not in str(err.value)
    legacy = tmp_path / "legacy"  # made before artifacts carried a hash
    finished_row(legacy, None)
    with pytest.raises(ErasekitError, match="other options"):
        train_row("ESD", cfg, legacy, progress=False)


def test_itd_on_advunlearn_is_fitted_on_that_encoder_and_tied_to_it(tmp_path, monkeypatch) -> None:
    """ItD+AdvUnlearn used to be the patch fitted on the original encoder attached to the AdvUnlearn one (its gate
    never fired there): the row now fits ItD on the AdvUnlearn row's encoder and is refused when that row changes."""
    calls = []

    def fake_run_method(domain, method, config, folder, text_encoder=None, progress=True):
        calls.append((method, text_encoder))
        Path(folder).mkdir(parents=True)
        return {"config_sha256": config_hash(config)}

    monkeypatch.setattr(bench, "run_method", fake_run_method)
    cfg, folder = BenchConfig(), tmp_path / "ItD+AdvUnlearn"
    train_row("ItD+AdvUnlearn", cfg, folder, progress=False, base={"config_sha256": "a" * 64})
    assert calls == [("itd", str(tmp_path / "AdvUnlearn" / "text_encoder"))]
    assert train_row("ItD+AdvUnlearn", cfg, folder, False, base={"config_sha256": "a" * 64})["reused"] is True
    with pytest.raises(ErasekitError, match="base row"):
        train_row("ItD+AdvUnlearn", cfg, folder, False, base={"config_sha256": "b" * 64})
    assert len(calls) == 1


def test_cli_refuses_a_row_folder_of_another_recipe(tmp_path, monkeypatch, capsys) -> None:
    finished_row(tmp_path / "ESD", "0" * 64)
    code, _, _, errors = erasekit(monkeypatch, capsys, "bench", "--rows", "ESD", "-o", tmp_path)
    assert code == 2 and len(errors) == 1 and str(tmp_path / "ESD") in errors[0]


def test_bench_rows_and_the_demo_table_options() -> None:
    demo, old = demo_config().model_dump(), OLD["demo"]
    assert demo["rows"] == ["Original", "AdvUnlearn", "ItD", "Robust"]  # the robustness table's rows
    assert demo["methods"]["ItD"] == old["methods"]["ItD"]
    assert demo["evaluation"]["attacks"] == list(ATTACKS)  # a column per attack
    stage1 = demo["methods"]["Robust"]["stage1"]  # stage 1 on the demo AdvUnlearn row's short schedule
    assert stage1 == demo["methods"]["AdvUnlearn"]
    assert [bench.ROWS[r][1] for r in ("ESD", "AT-ESD", "AdvUnlearn", "ItD")] == [
        "shapes/esd-paper", "shapes/advunlearn-atesd", "shapes/advunlearn", "shapes/itd"
    ]  # fmt: skip
    with pytest.raises(ErasekitError, match="unknown bench row"):
        bench.run_bench(BenchConfig(rows=["Original", "Nope"]), Path("unused"), progress=False)
    with pytest.raises(ErasekitError, match="shapes world only"):
        bench.run_bench(BenchConfig(model="CompVis/stable-diffusion-v1-4"), Path("unused"), progress=False)


def run_bench(monkeypatch, capsys, tmp_path: Path, out: Path, *extra: str) -> tuple[int, str, list[str], dict | None]:
    """(exit code, stdout, error lines, bench.json) of `erasekit bench` with CONFIG (+ extra arguments)."""
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    args = ["bench", "--model", "shapes", "--concept", "circle", "--config", cfg, "-o", out, *extra]
    code, stdout, stderr, errors = erasekit(monkeypatch, capsys, *args)
    assert code == 0 or errors, stderr[-3000:]
    return code, stdout, errors, json.loads((out / "bench.json").read_text()) if code == 0 else None


def test_bench_table_reuse_and_reproducibility(tmp_path, monkeypatch, capsys) -> None:
    run = lambda out, *extra: run_bench(monkeypatch, capsys, tmp_path, out, *extra)  # noqa: E731
    code, stdout, _, first = run(tmp_path / "a")
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert code == 0 and [line.split(" | ")[0] for line in table[1:]] == ["| Original", "| ESD", "| ItD"]
    rows = first["rows"]
    assert rows["ESD"]["protocol"]["model"]["parts"]["text_encoder"]["folder"].endswith("ESD")
    assert rows["ItD"]["protocol"]["model"]["parts"]["patch"]["folder"].endswith("ItD")
    assert rows["ESD"]["metrics"]["training"]["unet_rows"] > 0 and not rows["ESD"]["metrics"]["training"]["reused"]
    assert (tmp_path / "a" / "report.html").stat().st_size > 10_000
    assert first["commit"] is None or len(first["commit"]) >= 7  # the numbers are stamped with the commit
    summary = json.loads((tmp_path / "a" / "ESD" / SUMMARY).read_text())
    assert summary["recipe"] == "shapes/esd-paper" and len(summary["config_sha256"]) == 64
    evaluated, real = [], bench.run_evaluation
    monkeypatch.setattr(
        bench, "run_evaluation", lambda c, parts, *a: evaluated.append(sorted(parts)) or real(c, parts, *a)
    )
    (tmp_path / "a" / "ESD" / bench.EVALUATION).unlink()  # as if interrupted during ESD's evaluation
    code, _, _, again = run(tmp_path / "a")  # same folder: artifacts are reused, finished evaluations too
    assert code == 0 and again["rows"]["ESD"]["metrics"]["training"]["reused"]
    assert evaluated == [["text_encoder"]]  # only the unfinished row was evaluated again
    strip = lambda m: {k: v for k, v in m.items() if k not in ("wall_s", "training")}  # noqa: E731
    for row in CONFIG["rows"]:
        assert strip(again["rows"][row]["metrics"]) == strip(first["rows"][row]["metrics"]), row
    monkeypatch.setattr(bench, "code_sha256", lambda: "0" * 64)  # the package changed: evaluate again
    evaluated.clear()
    assert run(tmp_path / "a", "--rows", "Original")[0] == 0 and evaluated == [[]]
    code, _, errors, _ = run(tmp_path / "a", "--rows", "ESD", "--set", "methods.ESD.lr=0.002")
    assert code == 2 and len(errors) == 1 and str(tmp_path / "a" / "ESD") in errors[0]  # never silently mixed
    code, _, _, fresh = run(tmp_path / "b")  # a fresh run with the same seed gives the same numbers
    for row in CONFIG["rows"]:
        assert strip(fresh["rows"][row]["metrics"]) == strip(first["rows"][row]["metrics"]), row
    code, _, _, side = run(tmp_path / "c", "--jobs", "2")  # rows side by side in two processes: the same table
    assert code == 0 and side["config"]["jobs"] == 2 and not side["rows"]["ESD"]["metrics"]["training"]["reused"]
    for row in CONFIG["rows"]:  # one thread per process instead of two: sums in another order, same up to rounding
        got, want = strip(side["rows"][row]["metrics"]), strip(first["rows"][row]["metrics"])
        scores = [k for k, v in want.items() if isinstance(v, float)]  # FID, CLIP score; rates are counts
        assert [got[k] for k in scores] == pytest.approx([want[k] for k in scores], rel=1e-4), row
        assert {k: v for k, v in got.items() if k not in scores} == {k: v for k, v in want.items() if k not in scores}


def test_results_page_is_generated_from_bench_json(tmp_path: Path) -> None:
    from erasekit.bench.docs import main as docs_main

    card = {
        "prompt_sets": {"target": {"rows": 50}},
        "sampler": {"scheduler": "DDIMScheduler", "steps": 25, "guidance": 5},
    }
    metrics = {"pre_attack_rate": 0.02, "asr_soft": {"asr": 0.1}, "robustness": {"worst": 0.1, "prompts": 50}}
    payload = {
        "commit": "abc1234",
        "config": {"concept": "circle", "model": "shapes", "seed": 0},
        "rows": {"AdvUnlearn": {"protocol": card, "metrics": metrics}},
    }
    (tmp_path / "run.json").write_text(json.dumps(payload))
    docs_main([str(tmp_path / "run.json"), "-o", str(tmp_path / "results.md")])
    page = (tmp_path / "results.md").read_text()
    assert "`abc1234`" in page and "one prompt = 2 points" in page
    assert "| AdvUnlearn | 2.0% | 10.0% |" in page  # the figure comes from the JSON, formatted once


def test_rows_trained_with_an_earlier_recipe_are_named_with_the_options_that_differ() -> None:
    def stored(method: str, recipe: str, **changed) -> dict:  # an artifact's info as the methods write it
        config, _ = method_config(domain_for("shapes"), method, ["circle"], recipe, None, {"seed": 0})
        return {"method": method, "config": json.loads(json.dumps({**config.model_dump(), **changed}, default=str))}

    def row(**parts: dict) -> dict:
        sets = {"prompt_sets": {"target": {"rows": 50}}, "sampler": {"scheduler": "DDIM", "steps": 25, "guidance": 5}}
        return {"protocol": {**sets, "model": {"parts": {k: {"info": v} for k, v in parts.items()}}}, "metrics": {}}

    older = stored("advunlearn", "shapes/advunlearn", steps=7)
    older["config"].pop("attack_widths")  # an option added later, at its default: no change
    rows = {"Original": row(), "ESD": row(unet=stored("esd", "shapes/esd-paper"))}
    rows["AdvUnlearn"] = row(text_encoder=older)
    rows["ItD+AdvUnlearn"] = row(text_encoder=older, patch=stored("itd", "shapes/itd", gone_option=1))
    payload = {"config": {"model": "shapes", "concept": "circle", "seed": 0, "methods": {}}, "rows": rows}
    assert bench.recipe_changes(payload) == {
        "AdvUnlearn": ["steps"], "ItD+AdvUnlearn": ["AdvUnlearn: steps", "gone_option"]
    }  # fmt: skip
    assert "so these rows' figures are that recipe's: AdvUnlearn (steps); ItD+AdvUnlearn (" in section(payload, "x")


def test_results_page_renders_a_cost_file(tmp_path: Path) -> None:
    from erasekit.bench.docs import main as docs_main

    def row(calls: float, s_it: float, setup: float, its: int) -> dict:
        keys = ("unet_calls_per_step", "seconds_per_step", "bank_seconds", "recipe_iterations")
        return dict(zip(keys, (calls, s_it, setup, its), strict=True))

    rows = {"AdvUnlearn (encoder)": row(12, 0.5, 5, 500), "Robust stage 1": row(23, 1.0, 10, 500)}
    rows["Robust stage 2"] = row(45, 2.0, 0, 400)
    payload = {"kind": "cost", "commit": "abc1234", "model": "shapes", "concept": "circle", "iterations": 20}
    (tmp_path / "cost.json").write_text(json.dumps({**payload, "cpus": 2, "threads": 2, "rows": rows}))
    docs_main([str(tmp_path / "cost.json"), "-o", str(tmp_path / "results.md")])
    page = (tmp_path / "results.md").read_text()
    assert "## cost" in page and "`abc1234`" in page
    assert "| Robust stage 2 | 45.0 | 2.00 | 4.00x | 0.0 | 400 | 800 |" in page  # relative to the first row
    assert "AdvUnlearn 255 s (1.0x), Robust 1310 s (5.1x)" in page  # 5 + 250 against 10 + 500 + 800


def test_code_hash_follows_the_code_not_its_docstrings(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text('"""A module."""\n\ndef f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n')
    before = bench.code_sha256(tmp_path)
    (tmp_path / "m.py").write_text('"""Reworded."""\n\ndef f(x):\n    """x, doubled."""\n    return 2 * x\n')
    assert bench.code_sha256(tmp_path) == before  # docstrings and comments are not the code
    (tmp_path / "m.py").write_text('"""Reworded."""\n\ndef f(x):\n    """x, doubled."""\n    return 3 * x\n')
    assert bench.code_sha256(tmp_path) != before
    (tmp_path / "n.py").write_text("")
    assert bench.code_sha256(tmp_path) != before  # a new module too
