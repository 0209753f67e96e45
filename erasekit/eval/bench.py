"""`bench`: the table of the AdvUnlearn and ItD papers on the shapes world, one row per method.

Rows: Original, ESD, AT-ESD (AdvUnlearn with gamma = 0), AdvUnlearn, ItD, ItD + AdvUnlearn (the ItD patch attached
to the AdvUnlearn text encoder). A row whose method is not in this build is listed as missing, not faked. Each
row trains its artifact into `<output>/<row>/` (a finished artifact is reused, an interrupted one resumes) and is
then evaluated with one shared EvalConfig, so every row sees the same prompts, seeds and attacks.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from erasekit.config import load_config
from erasekit.errors import ErasekitError
from erasekit.eval.harness import EvalConfig, EvalResult, evaluate

ROWS = ("Original", "ESD", "AT-ESD", "AdvUnlearn", "ItD", "ItD+AdvUnlearn")
# row -> (module, config class, options the row fixes)
METHODS: dict[str, tuple[str, str, dict]] = {
    "ESD": ("erasekit.methods.esd", "EsdConfig", {}),
    "AT-ESD": ("erasekit.methods.advunlearn", "AdvUnlearnConfig", {"gamma": 0.0}),
    "AdvUnlearn": ("erasekit.methods.advunlearn", "AdvUnlearnConfig", {}),
    "ItD": ("erasekit.methods.itd", "ItdConfig", {}),
}
COMBINED = {"ItD+AdvUnlearn": ("AdvUnlearn", "ItD")}  # (text encoder from, patch from)
# Per-row options on top of each method's shapes-world recipe (its config's SHAPES_DEFAULTS); YAML `methods:`
# entries override them key by key.
# The ESD row is the papers' baseline: ESD-x without the retain term (gamma 0) that our shapes recipe adds.
SHAPES_METHODS: dict[str, dict] = {
    "ESD": {"component": "unet", "part": "xattn", "gamma": 0.0},
    "AT-ESD": {},
    "AdvUnlearn": {},
    "ItD": {},
}


class BenchConfig(BaseModel):
    """Options of `erasekit bench`; `methods` holds per-method options (YAML: methods: {ESD: {steps: 200}})."""

    model_config = ConfigDict(extra="forbid")

    world: str = "shapes"
    model: str = Field("shapes", description="the world's pipeline: 'shapes' (bundled) or a folder with a copy")
    concept: str = "circle"
    seed: int = 0
    rows: list[str] = Field(default_factory=lambda: list(ROWS))
    methods: dict[str, dict] = Field(default_factory=dict, description="per-row method options")
    evaluation: dict = Field(default_factory=dict, description="EvalConfig options shared by all rows")


def demo_config(concept: str = "circle", seed: int = 0) -> BenchConfig:
    """A few-minute table for `make demo`: Original, ESD, AdvUnlearn and ItD with short schedules and small sets."""
    return BenchConfig(
        concept=concept,
        seed=seed,
        rows=["Original", "ESD", "AdvUnlearn", "ItD"],
        methods={"ESD": {"steps": 150}, "AdvUnlearn": {"steps": 100, "warmup": 20}, "ItD": {"steps": 1000}},
        evaluation={
            "n_target": 20, "n_retain": 20, "n_world": 80, "attack_prompts": 5,
            "attack_options": {"soft": {"steps": 50}, "token": {"steps": 50}},
        },
    )  # fmt: skip


def row_available(row: str) -> bool:
    if row == "Original":
        return True
    if row in COMBINED:
        return all(row_available(r) for r in COMBINED[row])
    return importlib.util.find_spec(METHODS[row][0]) is not None


def train_row(row: str, cfg: BenchConfig, folder: Path, progress: bool) -> dict:
    """Train the row's artifact into `folder` unless it is already there; returns the method's summary."""
    summary_file = folder / "bench-train.json"
    if summary_file.is_file():
        return {**json.loads(summary_file.read_text()), "reused": True}
    from erasekit.methods import default_prompts
    from erasekit.pipeline import load_pipeline

    module_name, cls_name, fixed = METHODS[row]
    module = importlib.import_module(module_name)
    options = {"concepts": [cfg.concept], "seed": cfg.seed, **SHAPES_METHODS[row], **cfg.methods.get(row, {}), **fixed}
    config = default_prompts(load_config(getattr(module, cls_name), None, options), cfg.world)
    pipe = load_pipeline(cfg.model)
    t0 = time.perf_counter()
    kwargs = {"progress": progress} if "progress" in module.erase.__code__.co_varnames else {}
    summary = module.erase(pipe, config, folder, **kwargs)
    summary = {**summary, "bench_wall_s": round(time.perf_counter() - t0, 2)}
    summary_file.write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _component(folder: Path) -> dict:
    """{"text_encoder": folder} or {"unet": folder} for a weights artifact, {"patch": folder} for an ItD patch."""
    info_file = folder / "erasekit.json"
    component = json.loads(info_file.read_text()).get("component") if info_file.is_file() else None
    return {component: str(folder)} if component in ("text_encoder", "unet") else {"patch": str(folder)}


def run_bench(cfg: BenchConfig, output: Path, progress: bool = True) -> dict[str, EvalResult | str]:
    """{row: EvalResult} for the rows that ran, {row: "reason"} for those that could not."""
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ErasekitError(f"unknown bench row(s) {unknown}: use some of {', '.join(ROWS)}")
    if cfg.world != "shapes":
        raise ErasekitError("bench runs on the shapes world only (--world shapes); use `erasekit evaluate` for SD")
    results: dict[str, EvalResult | str] = {}
    trained: dict[str, tuple[Path, dict]] = {}
    base = {"model": cfg.model, "concept": cfg.concept, "seed": cfg.seed, **cfg.evaluation}
    load_config(EvalConfig, None, base)  # a typo in `evaluation` fails here, before any training
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    for i, row in enumerate(cfg.rows, start=1):
        console.print(f"[bold]bench {i}/{len(cfg.rows)}: {row}[/bold]")
        if not row_available(row):
            results[row] = "method not in this build yet"
            continue
        artifact: dict = {}
        training: dict | None = None
        if row in METHODS:
            folder = output / row
            training = train_row(row, cfg, folder, progress)
            trained[row] = (folder, training)
            artifact = _component(folder)
        elif row in COMBINED:
            parts = []
            for dep in COMBINED[row]:
                if dep not in trained:
                    trained[dep] = (output / dep, train_row(dep, cfg, output / dep, progress))
                parts.append(_component(trained[dep][0]))
            artifact = {k: v for p in parts for k, v in p.items()}
            training = {d: trained[d][1] for d in COMBINED[row]}
        baseline = results.get("Original")
        baseline = baseline if isinstance(baseline, EvalResult) else None
        result = evaluate(load_config(EvalConfig, None, {**base, **artifact}), progress, baseline)
        if training is not None:
            result.metrics["training"] = _training_cost(training, row in COMBINED)
        results[row] = result
    return results


def bench_report(cfg: BenchConfig, output: Path, progress: bool = True) -> dict | None:
    """Run the bench, write `output/report.html` and `output/bench.json`; returns that JSON's payload (None on
    processes other than the main one) with the Markdown table under "table"."""
    from erasekit.eval.distributed import finish, is_main_process
    from erasekit.eval.report import markdown_table, write_report

    results = run_bench(cfg, output, progress)
    main = is_main_process()
    finish()
    if not main:
        return None
    done = {k: v for k, v in results.items() if not isinstance(v, str)}
    title = f"erasekit bench: erase '{cfg.concept}' on the {cfg.world} world"
    payload = {
        "config": cfg.model_dump(),
        "rows": {k: v.to_json() for k, v in done.items()},
        "missing": {k: v for k, v in results.items() if isinstance(v, str)},
        "report": str(write_report(done, report_path(output), title)),
    }
    (output / "bench.json").write_text(json.dumps(payload, indent=1, default=str))
    return {**payload, "table": markdown_table(done)}


def report_path(output: Path) -> Path:
    return output / "report.html"


def _training_cost(summary: dict, combined: bool) -> dict:
    """Wall seconds and UNet evaluations (latent rows) the artifact cost to train (summed for combined rows)."""
    parts = list(summary.values()) if combined else [summary]
    return {
        "wall_s": sum(p.get("bench_wall_s") or p.get("seconds") or 0 for p in parts),
        "unet_rows": sum(p.get("unet_rows") or 0 for p in parts),
        "unet_calls": sum(p.get("unet_calls") or 0 for p in parts),
        "reused": any(p.get("reused", False) for p in parts),
    }
