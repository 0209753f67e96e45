"""The main job (`make demo`): erase "circle" from the bundled shapes world, attack it, evaluate it.

Runs `erasekit bench --quick` on a few rows (the original model and the erasure methods with short schedules),
then prints where the HTML report is, the Markdown table, and a grid of what the original model draws. Rerunning
reuses the finished artifacts in the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from erasekit.bench import bench_report, demo_config, report_path
from erasekit.generation import generate
from erasekit.imaging import save_grid
from erasekit.pipeline import load_pipeline, quiet_libraries
from erasekit.world.render import COLOUR_NAMES, SHAPES


def main(out: Path = Path("out/demo"), concept: str = "circle") -> None:
    quiet_libraries()
    print(f"erasekit demo: erase '{concept}' -> attack -> evaluate; HTML report: {report_path(out).resolve()}")
    t0 = time.perf_counter()
    pipe = load_pipeline("shapes")
    prompts = [f"a {c} {s} on a white background" for s in SHAPES for c in COLOUR_NAMES]
    grid = save_grid(
        generate(pipe, prompts, list(range(len(prompts)))), out / "shapes-grid.png", cols=len(COLOUR_NAMES)
    )
    payload = bench_report(demo_config(concept), out)
    print(payload["table"])
    print(f"report: {payload['report']}\nresults: {out / 'bench.json'}\noriginal model's shapes x colours: {grid}")
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
