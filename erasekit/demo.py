"""The main job (`make demo`): draw every shape of the bundled world and write the grid.

Later stages (erase -> attack -> evaluate) join here as their issues land.
"""

from __future__ import annotations

from pathlib import Path


def main(out: Path = Path("out/demo")) -> None:
    from erasekit.cli import quiet_libraries

    quiet_libraries()
    from erasekit.generation import generate
    from erasekit.imaging import save_grid
    from erasekit.pipeline import load_pipeline
    from erasekit.world.render import COLOUR_NAMES, SHAPES

    pipe = load_pipeline("shapes")
    prompts = [f"a {c} {s} on a white background" for s in SHAPES for c in COLOUR_NAMES]
    images = generate(pipe, prompts, list(range(len(prompts))), progress=True)
    path = save_grid(images, out / "shapes-grid.png", cols=len(COLOUR_NAMES))
    print(f"grid of {len(prompts)} images (rows: {', '.join(SHAPES)}; columns: {', '.join(COLOUR_NAMES)}) -> {path}")


if __name__ == "__main__":
    main()
