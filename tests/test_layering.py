"""The one-way flow of ../shared/DESIGN.md, checked on the source: general layers never import the shapes world,
evaluation never imports the methods, attacks never import evaluation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import erasekit

ROOT = Path(erasekit.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved against the package)."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


RULES = [
    ("methods", ("erasekit.world", "erasekit.domains", "erasekit.eval", "erasekit.bench", "erasekit.cli")),
    ("attacks", ("erasekit.world", "erasekit.domains", "erasekit.eval", "erasekit.methods", "erasekit.bench")),
    ("eval", ("erasekit.world", "erasekit.domains", "erasekit.methods", "erasekit.bench", "erasekit.cli")),
]


@pytest.mark.parametrize(("layer", "banned"), RULES, ids=[r[0] for r in RULES])
def test_layer_imports_nothing_above_it(layer: str, banned: tuple[str, ...]) -> None:
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules under erasekit/{layer}"
    leaks = {
        f"{p.relative_to(ROOT)} imports {m}"
        for p in files
        for m in imported_modules(p)
        if any(m == b or m.startswith(b + ".") for b in banned)
    }
    assert not leaks, sorted(leaks)


def test_core_modules_do_not_import_the_world_or_upper_layers() -> None:
    core = [p for p in ROOT.glob("*.py") if p.name not in ("demo.py", "__main__.py")]
    banned = ("erasekit.world", "erasekit.domains", "erasekit.methods", "erasekit.eval", "erasekit.attacks")
    leaks = {f"{p.name} imports {m}" for p in core for m in imported_modules(p) if m.startswith(banned)}
    assert not leaks, sorted(leaks)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule would fire: a file importing the world is reported (so an empty pass means something)."""
    fake = ROOT / "eval" / "_probe_layering.py"
    fake.write_text("from erasekit.world.render import render\n")
    try:
        assert "erasekit.world.render" in imported_modules(fake)
    finally:
        fake.unlink()
