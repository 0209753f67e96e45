"""`bench`: the table of the AdvUnlearn and ItD papers on the shapes world, one row per method.

Rows: Original, ESD (the paper's ESD-x), AT-ESD (AdvUnlearn with gamma = 0), AdvUnlearn, ItD, ItD + AdvUnlearn (ItD
fitted on the AdvUnlearn text encoder: its SAE, features and gate read that encoder's residual stream, since a gate
calibrated on the original encoder never fires on the erased one), Robust (an adversarially erased encoder, then an
adversarially erased UNet behind it, both stages trained within the row). Every row is attacked by every attack (a
column each). Each trained row resolves its recipe (`ROWS`), trains its
artifact into `<output>/<row>/` and records the resolved config's hash; a finished artifact with the same hash is
reused, one with another hash is refused (never silently mixed), an interrupted one resumes. Every row is then
evaluated with one shared EvalConfig, so every row sees the same prompts, seeds and attacks; a row's finished
evaluation is kept in `<output>/<row>/` (metrics JSON + images in safetensors) under a key of the evaluation options,
the row's artifact hashes and the package's code, so an interrupted bench redoes only the rows it had not finished
and a changed metric or attack is never read from an older run. The bench trains
through `erasekit.domains` / `erasekit.methods` and evaluates through `erasekit.eval`; eval never trains.
"""

from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import os
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from safetensors.torch import load_file, save_file

from erasekit.attacks import ATTACKS
from erasekit.config import config_hash, load_recipe, resolve
from erasekit.domains import domain_for, eval_config, method_config, run_evaluation, run_method
from erasekit.errors import ErasekitError
from erasekit.eval.distributed import finish, is_main_process, world_size
from erasekit.eval.harness import EvalConfig, EvalResult
from erasekit.eval.report import markdown_table, write_report
from erasekit.methods import artifact_parts
from erasekit.pipeline import quiet_libraries

# row -> (method, recipe) of the trained rows (None: the original model)
ROWS: dict[str, tuple[str, str] | None] = {
    "Original": None,
    "ESD": ("esd", "shapes/esd-paper"),
    "AT-ESD": ("advunlearn", "shapes/advunlearn-atesd"),
    "AdvUnlearn": ("advunlearn", "shapes/advunlearn"),
    "ItD": ("itd", "shapes/itd"),
    "ItD+AdvUnlearn": ("itd", "shapes/itd"),
    "Robust": ("robust", "shapes/robust"),
}
BASES = {"ItD+AdvUnlearn": "AdvUnlearn"}  # row -> the row whose text encoder it is trained on and loaded with
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)  # what can open with a docstring
PACKAGE = Path(__file__).resolve().parents[1]  # the erasekit folder whose code the kept evaluations are keyed by
SUMMARY = "bench-train.json"
EVALUATION, IMAGES = "bench-eval.json", "bench-eval-images.safetensors"


class BenchConfig(BaseModel):
    """Options of `erasekit bench`; `methods` holds per-row method options (YAML: methods: {ESD: {steps: 200}})."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("shapes", description="the world's pipeline: 'shapes' (bundled) or a bundle's pipeline folder")
    concept: str = "circle"
    seed: int = 0
    rows: list[str] = Field(default_factory=lambda: list(ROWS))
    methods: dict[str, dict] = Field(default_factory=dict, description="per-row method options")
    evaluation: dict = Field(
        default_factory=lambda: {"attacks": list(ATTACKS)}, description="EvalConfig options shared by all rows"
    )
    jobs: int = Field(
        1,
        ge=1,
        description="rows trained and evaluated side by side in this many processes, each with its share of the CPU "
        "threads (a small model keeps two processes of one thread busier than one process of two); another thread "
        "count rounds sums in another order, so numbers agree with jobs 1 up to that rounding",
    )


def demo_config(concept: str = "circle", seed: int = 0) -> BenchConfig:
    """A few-minute table for `make demo`: the shipped `shapes/bench-quick` recipe (the robustness table's rows on
    short schedules, small sets and short attacks), two rows at a time where there are two cores."""
    recipe = load_recipe("shapes/bench-quick")
    jobs = min(recipe["jobs"], os.cpu_count() or 1)
    return resolve(BenchConfig, recipe, {"concept": concept, "seed": seed, "jobs": jobs})


def row_config(cfg: BenchConfig, row: str) -> BaseModel:
    """The method config a trained row resolves to: its shipped recipe (`ROWS`), the bench seed and the row's options."""
    method, recipe = ROWS[row]
    options = {"seed": cfg.seed, **cfg.methods.get(row, {})}
    config, _ = method_config(domain_for(cfg.model), method, [cfg.concept], recipe, None, options)
    return config


def option_changes(stored: dict, now: BaseModel) -> list[str]:
    """The options in which a config stored in an artifact (`stored`, its JSON form) differs from `now`: options whose
    values differ, options no longer in the class, and options the stored config lacks whose value in `now` is not
    the class default (an option is added with the earlier behaviour as its default, so a lacking one at its default
    is no change)."""
    fields = type(now).model_fields
    defaults = now.model_copy(
        update={k: f.get_default(call_default_factory=True) for k, f in fields.items() if not f.is_required()}
    )
    current, default = (json.loads(json.dumps(c.model_dump(), default=str)) for c in (now, defaults))
    changed = [k for k in fields if current[k] != stored.get(k, default[k])]
    return changed + sorted(set(stored) - set(fields))


def recipe_changes(payload: dict) -> dict[str, list[str]]:
    """Per trained row of a bench file (`bench.json`), the options in which its artifacts were trained otherwise than
    the row's shipped recipe resolves to today ("AdvUnlearn: steps" for a part trained in the base row); rows without
    a change are left out. Such a row's figures are an earlier recipe's."""
    cfg = BenchConfig.model_validate(payload["config"])
    changes: dict[str, list[str]] = {}
    for row, result in payload["rows"].items():
        if ROWS.get(row) is None:
            continue
        names: list[str] = []
        for part in result["protocol"].get("model", {}).get("parts", {}).values():
            info = part.get("info", {})
            source = row if info.get("method") == ROWS[row][0] else BASES.get(row)
            if "config" not in info or ROWS.get(source) is None:
                continue
            now = row_config(cfg, source)
            prefix = "" if source == row else f"{source}: "
            names += [prefix + k for k in option_changes(info["config"], now) if prefix + k not in names]
        if names:
            changes[row] = names
    return changes


def train_row(row: str, cfg: BenchConfig, folder: Path, progress: bool, base: dict | None = None) -> dict:
    """Train the row's artifact into `folder` unless the same config (on the same base row's artifact, when the row
    has one: `base` is that row's summary) already finished there; its summary."""
    method, recipe = ROWS[row]
    config = row_config(cfg, row)
    digest = config_hash(config)
    base_digest = base.get("config_sha256") if base else None
    summary_file = folder / SUMMARY
    if summary_file.is_file():
        done = json.loads(summary_file.read_text())
        if done.get("config_sha256") != digest or done.get("base_sha256") != base_digest:
            raise ErasekitError(
                f"{folder} holds a {row} artifact made with other options (recipe, --config or its base row "
                f"changed): delete the folder or bench into another -o"
            )
        return {**done, "reused": True}
    t0 = time.perf_counter()
    text_encoder = str(folder.parent / BASES[row] / "text_encoder") if row in BASES else None
    summary = run_method(domain_for(cfg.model), method, config, folder, text_encoder=text_encoder, progress=progress)
    summary = {
        **summary,
        "recipe": recipe,
        "base_sha256": base_digest,
        "bench_wall_s": round(time.perf_counter() - t0, 2),
    }
    summary_file.write_text(json.dumps(summary, indent=1, default=str))
    return summary


def run_bench(cfg: BenchConfig, output: Path, progress: bool = True) -> dict[str, EvalResult]:
    """{row: EvalResult} for every row, trained (or reused) and evaluated alike."""
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise ErasekitError(f"unknown bench row(s) {unknown}: use some of {', '.join(ROWS)}")
    if domain_for(cfg.model).name != "shapes":
        raise ErasekitError("bench runs on the shapes world only (--model shapes); use `erasekit evaluate` for SD")
    base = {"model": cfg.model, "concept": cfg.concept, "seed": cfg.seed, **cfg.evaluation}
    evaluation = eval_config(cfg.model, None, base)  # a typo in `evaluation` fails here, before any training
    shared_key = [config_hash(evaluation), code_sha256()]  # what every row's numbers depend on
    if cfg.jobs > 1:
        if world_size() > 1:
            raise ErasekitError("bench jobs > 1 starts its own processes: run it without accelerate launch or jobs 1")
        run_side_by_side(cfg, output, evaluation, shared_key, progress)
    console = Console(stderr=True, quiet=not progress)
    results: dict[str, EvalResult] = {}
    trained: dict[str, dict] = {}

    def trained_row(row: str) -> dict:
        if row not in trained:
            base = trained_row(BASES[row]) if row in BASES else None
            trained[row] = train_row(row, cfg, output / row, progress, base)
        return trained[row]

    for i, row in enumerate(cfg.rows, start=1):
        console.print(f"[bold]bench {i}/{len(cfg.rows)}: {row}[/bold]")
        training = [trained_row(dep) for dep in row_parts(row)]
        results[row] = evaluate_row(row, output, evaluation, shared_key, training, results.get("Original"), progress)
    return results


def row_parts(row: str) -> list[str]:
    """The rows whose artifacts make up `row`'s model: its base row's first, its own on top."""
    return ([BASES[row]] if row in BASES else []) + ([row] if ROWS[row] else [])


def evaluate_row(
    row: str,
    output: Path,
    evaluation: EvalConfig,
    shared_key: list[str],
    training: list[dict],
    baseline: EvalResult | None,
    progress: bool,
) -> EvalResult:
    """The row's evaluation: the one kept in its folder when made under the same key, else a fresh one (then kept).
    `training`: the summaries of `row_parts(row)`; `baseline`: the Original row's result, whose images are reused."""
    key = evaluation_key(shared_key, training)
    result = cached_evaluation(output / row, key)
    if result is not None:
        Console(stderr=True, quiet=not progress).print(f"{row}: evaluation reused from {output / row / EVALUATION}")
        return result
    parts: dict[str, str] = {}
    for dep in row_parts(row):
        parts.update(artifact_parts(output / dep))
    result = run_evaluation(evaluation, parts, progress, baseline)
    if training:
        result.metrics["training"] = training_cost(training)
    if is_main_process():
        save_evaluation(output / row, key, result)
    return result


def run_side_by_side(
    cfg: BenchConfig, output: Path, evaluation: EvalConfig, shared_key: list[str], progress: bool
) -> None:
    """Train and evaluate `cfg.rows` in `cfg.jobs` processes, each task as soon as what it needs is done: a row's
    base row trained before it, its parts before its evaluation, the Original row's evaluation (whose
    images the others reuse) before the others'. Every result lands in the row folders, where the serial pass of
    `run_bench` finds it; a worker's error is raised here once the tasks already running have finished (and kept)."""
    console = Console(stderr=True, quiet=not progress)
    trained = list(dict.fromkeys(dep for row in cfg.rows for dep in row_parts(row)))
    needs: dict[tuple[str, str], list[tuple[str, str]]] = {
        ("train", r): [("train", BASES[r])] if BASES.get(r) in trained else [] for r in trained
    }
    for r in cfg.rows:
        first = ["Original"] if r != "Original" and "Original" in cfg.rows else []
        needs[("evaluate", r)] = [("train", d) for d in row_parts(r)] + [("evaluate", d) for d in first]
    threads = max(1, torch.get_num_threads() // cfg.jobs)
    console.print(f"[bold]bench: {len(needs)} tasks in {cfg.jobs} processes of {threads} thread(s)[/bold]")
    done: dict[tuple[str, str], dict | None] = {}
    running: dict[Future, tuple[str, str]] = {}
    spawn = multiprocessing.get_context("spawn")  # a fork of a process with OpenMP threads can hang
    with ProcessPoolExecutor(cfg.jobs, mp_context=spawn, initializer=start_worker, initargs=(threads,)) as pool:
        while len(done) < len(needs):
            for task, deps in needs.items():
                if len(running) < cfg.jobs and task not in done and task not in running.values():
                    if all(d in done for d in deps):
                        kind, row = task
                        if kind == "train":
                            base = done[("train", BASES[row])] if row in BASES else None
                            future = pool.submit(train_row, row, cfg, output / row, False, base)
                        else:
                            training = [done[("train", d)] for d in row_parts(row)]
                            future = pool.submit(evaluate_in_worker, row, output, evaluation, shared_key, training)
                        running[future] = task
                        console.print(f"{kind} {row}: started")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                done[task] = future.result()
                console.print(f"{task[0]} {task[1]}: done")


def start_worker(threads: int) -> None:
    """A worker process of `run_side_by_side`: its share of the threads, and no library chatter."""
    torch.set_num_threads(threads)
    quiet_libraries()


def evaluate_in_worker(
    row: str, output: Path, evaluation: EvalConfig, shared_key: list[str], training: list[dict]
) -> None:
    """`evaluate_row` in a worker process of `run_side_by_side`; the Original row's kept evaluation (when there is
    one) is the baseline, as the serial pass would hand it over. Nothing is returned: the result is in the folder."""
    baseline = cached_evaluation(output / "Original", evaluation_key(shared_key, []))
    evaluate_row(row, output, evaluation, shared_key, training, baseline, progress=False)


def code_sha256(root: Path = PACKAGE) -> str:
    """sha256 of the Python code under `root` (the package): paths and syntax trees, without comments or docstrings.
    Any change to a metric, an attack or the sampler changes it, where a version number would not; a reworded
    docstring does not, so it never throws away hours of kept evaluations."""
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        tree = ast.parse(file.read_bytes())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(node, DOCUMENTED) and body and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
        digest.update(str(file.relative_to(root)).encode() + b"\0" + ast.dump(tree).encode())
    return digest.hexdigest()


def evaluation_key(shared: list[str], training: list[dict]) -> str:
    """sha256 of what a row's numbers depend on: `shared` (the evaluation options' and the package code's hashes) and
    the row's artifacts' (and base row's) config hashes."""
    parts = [*shared, *(str(t.get("config_sha256")) for t in training)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def save_evaluation(folder: Path, key: str, result: EvalResult) -> None:
    """Keep a row's finished evaluation: metrics, card and prompts (JSON), images (safetensors); JSON last, so a
    half-written pair is never read back."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in result.images.items()}, folder / IMAGES)
    payload = {"key": key, **result.to_json(), "prompts": result.prompts}
    (folder / EVALUATION).write_text(json.dumps(payload, indent=1, default=str))


def cached_evaluation(folder: Path, key: str) -> EvalResult | None:
    """The row's kept evaluation when it was made under `key` (same options, artifacts and code), else None."""
    file = folder / EVALUATION
    if not (file.is_file() and (folder / IMAGES).is_file()):
        return None
    payload = json.loads(file.read_text())
    if payload.get("key") != key:
        return None
    images = load_file(folder / IMAGES)
    return EvalResult(payload["protocol"], payload["metrics"], images, payload["prompts"])


def commit() -> str | None:
    """The git commit the numbers were made with (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def bench_report(cfg: BenchConfig, output: Path, progress: bool = True) -> dict | None:
    """Run the bench, write `output/report.html` and `output/bench.json` (stamped with the commit); returns that
    JSON's payload (None on processes other than the main one) with the Markdown table under "table"."""
    results = run_bench(cfg, output, progress)
    main = is_main_process()
    finish()
    if not main:
        return None
    title = f"erasekit bench: erase '{cfg.concept}' on the shapes world"
    payload = {
        "commit": commit(),
        "config": cfg.model_dump(),
        "rows": {k: v.to_json() for k, v in results.items()},
        "report": str(write_report(results, report_path(output), title)),
    }
    (output / "bench.json").write_text(json.dumps(payload, indent=1, default=str))
    return {**payload, "table": markdown_table(results)}


def report_path(output: Path) -> Path:
    return output / "report.html"


def training_cost(summaries: list[dict]) -> dict:
    """Wall seconds and UNet evaluations (latent rows, calls) the row's artifacts cost to train, summed."""
    return {
        "wall_s": sum(p.get("bench_wall_s") or p.get("seconds") or 0 for p in summaries),
        "unet_rows": sum(p.get("unet_rows") or 0 for p in summaries),
        "unet_calls": sum(p.get("unet_calls") or 0 for p in summaries),
        "unet_calls_per_step": summaries[-1].get("unet_calls_per_step"),
        "reused": any(p.get("reused", False) for p in summaries),
    }
