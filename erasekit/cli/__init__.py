"""The `erasekit` command: a typer app whose commands live one group per module in this package.

Every module here registers its commands on `app` when imported; `main` imports them all (sorted by name)
and turns an ErasekitError into one red line and exit code 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from click.exceptions import ClickException, Exit
from rich.console import Console

from erasekit.errors import ErasekitError
from erasekit.pipeline import quiet_libraries

app = typer.Typer(help="Robust concept erasure for text-to-image diffusion models.", no_args_is_help=True)
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Robust concept erasure for text-to-image diffusion models."""


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


def main() -> None:
    quiet_libraries()
    _register_commands()
    try:
        app(standalone_mode=False)
    except ErasekitError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors come through here with standalone_mode=False
        if isinstance(e, Exit):
            sys.exit(e.exit_code)
        if isinstance(e, ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
