"""`erasekit recipes`: the shipped recipes (domain x method x kind of concept), or one recipe's options."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from erasekit.cli import app
from erasekit.config import list_recipes, load_recipe


@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe's options (e.g. sd/advunlearn-nudity).")] = None,
) -> None:
    """List the shipped recipes; with NAME, print its options as YAML (pass it to `erase --recipe`)."""
    if name is not None:
        typer.echo(yaml.safe_dump(load_recipe(name), sort_keys=False).rstrip())
        return
    for r in list_recipes():
        typer.echo(f"{r['name']:<28} {r['about']}")
