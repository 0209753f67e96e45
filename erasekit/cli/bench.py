"""`erasekit bench`: train and evaluate every method row on the shapes world; Markdown table + HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli import app
from erasekit.cli.options import Seed


@app.command()
def bench(
    world: Annotated[str, typer.Option("--world", help="The world to benchmark on (only 'shapes').")] = "shapes",
    concept: Annotated[str, typer.Option("--concept", help="Shapes-world concept to erase.")] = "circle",
    rows: Annotated[
        str | None,
        typer.Option("--rows", help="Comma list of rows (Original,ESD,AT-ESD,AdvUnlearn,ItD,ItD+AdvUnlearn)."),
    ] = None,
    seed: Seed = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML: rows, methods, evaluation.")] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for artifacts, bench.json, report.html.")
    ] = Path("out/bench"),
    quick: Annotated[bool, typer.Option("--quick", help="Short schedules and small sets (the demo's table).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of Markdown.")] = False,
) -> None:
    """Train (or reuse) each row's artifact in --output, evaluate all rows alike, print the table."""
    from erasekit.config import load_config
    from erasekit.eval.bench import BenchConfig, bench_report, demo_config

    row_list = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
    options = demo_config().model_dump(exclude={"concept", "seed"}) if quick else {}  # then YAML, then flags
    if config is not None:
        for key, value in load_config(BenchConfig, config).model_dump(exclude_unset=True).items():
            nested = isinstance(value, dict) and isinstance(options.get(key), dict)
            options[key] = {**options[key], **value} if nested else value
    flags = {"world": world, "concept": concept, "seed": seed, "rows": row_list}
    cfg = load_config(BenchConfig, None, {**options, **{k: v for k, v in flags.items() if v is not None}})
    payload = bench_report(cfg, output, progress=not as_json)
    if payload is None:  # not the main process
        return
    table = payload.pop("table")
    if as_json:
        typer.echo(json.dumps(payload, default=str))
        return
    typer.echo(table)
    for row, why in payload["missing"].items():
        typer.echo(f"- {row}: {why}")
    typer.echo(f"report: {payload['report']}\nresults: {output / 'bench.json'}")
