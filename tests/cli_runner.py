"""Test helpers for the command line (plain functions, like sd_fixture.py).

erasekit(monkeypatch, capsys, *args) -> (exit code, stdout, stderr, error lines)   the real entry point
    (`erasekit.cli.main`: one red line and exit code 2 on an ErasekitError) in this process, so it runs with
    the test's thread count and without a new interpreter's import time
child_env()  the environment for a `python -m erasekit` child: torch threads as ERASEKIT_TEST_THREADS (a child
    otherwise takes every core, and two busy processes on 2 cores slow each other down many times over)
"""

from __future__ import annotations

import os
import sys

from erasekit.cli import main


def erasekit(monkeypatch, capsys, *args: str) -> tuple[int, str, str, list[str]]:
    monkeypatch.setattr(sys, "argv", ["erasekit", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err, [line for line in out.err.splitlines() if line.startswith("error:")]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("ERASEKIT_TEST_THREADS", "2")}
