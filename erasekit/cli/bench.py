"""`erasekit bench`: train and evaluate every method row on the shapes world; Markdown table + HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.bench import ROWS, BenchConfig, bench_report, demo_config
from erasekit.cli import app
from erasekit.cli.options import Config, Json, Model, Seed, Sets
from erasekit.config import given, parse_sets, read_yaml, resolve


@app.command()
def bench(
    model: Model = "shapes",
    concept: Annotated[str | None, typer.Option("--concept", help="Shapes-world concept to erase.")] = None,
    rows: Annotated[str | None, typer.Option("--rows", help=f"Comma list of rows ({','.join(ROWS)}).")] = None,
    seed: Seed = None,
    config: Config = None,
    sets: Sets = [],  # noqa: B006
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for artifacts, bench.json, report.html.")
    ] = Path("out/bench"),
    quick: Annotated[
        bool, typer.Option("--quick", help="The demo's table: recipe shapes/bench-quick (short schedules, small sets).")
    ] = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", min=1, help="Rows trained and evaluated side by side in N processes.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Train (or reuse) each row's artifact in --output, evaluate all rows alike, print the table."""
    row_list = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
    quick_layer = demo_config().model_dump(exclude={"concept", "seed"}) if quick else {}
    flags = given({"model": model, "concept": concept, "seed": seed, "rows": row_list, "jobs": jobs})
    cfg = resolve(BenchConfig, quick_layer, read_yaml(config) if config else {}, parse_sets(sets), flags)
    payload = bench_report(cfg, output, progress=not as_json)
    if payload is None:  # not the main process
        return
    table = payload.pop("table")
    if as_json:
        typer.echo(json.dumps(payload, default=str))
        return
    typer.echo(table)
    typer.echo(f"report: {payload['report']}\nresults: {output / 'bench.json'}")
