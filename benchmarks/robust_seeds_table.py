"""The per-seed table of docs/history.md from the files `benchmarks/robust_seed.sh` writes.

    python benchmarks/robust_seeds_table.py runs/rob13-s0 runs/rob13-s1 runs/rob13-s2
    python benchmarks/robust_seeds_table.py --extra soft-a1 runs/rob32-s0 ...   # plus runs/rob32-s0-soft-a1.json

`--extra NAME` adds a column for another attack file beside a run (e.g. the soft attack at `--seed 1`, which
`ATTACK_SEEDS="0 1" bash benchmarks/robust_seed.sh ...` writes to runs/TAG-sSEED-soft-a1.json): its attack's ASR.

A cell is '-' where that step has not run (yet). Circles = the evaluation's pre-attack rate on the held-out circle
prompts, other shapes = its retained accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ATTACKS = ("soft", "token", "inversion", "ring-a-bell")


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() and path.stat().st_size else None


def row(run: Path, extra: list[str]) -> list[str]:
    cells = []
    for name in (*ATTACKS, *extra):
        result = load(run.with_name(f"{run.name}-{name}.json"))
        cells.append(f"{next(iter(result['attacks'].values()))['asr']:.0%}" if result else "-")
    evaluation = load(run.with_name(f"{run.name}-eval.json"))
    metrics = (evaluation or {}).get("metrics", {})
    formats = (("pre_attack_rate", "{:.0%}"), ("retained_accuracy", "{:.2f}"), ("fid", "{:.2f}"),
               ("fid_without_concept", "{:.2f}"))  # fmt: skip
    cells += [f.format(metrics[k]) if metrics.get(k) is not None else "-" for k, f in formats]
    summary = load(run / "erasekit.json") or {}
    cells.append(f"{summary['seconds']:.0f}" if "seconds" in summary else "-")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="runs/TAG-sSEED folders")
    parser.add_argument(
        "--extra", action="append", default=[], help="another attack file's suffix (runs/TAG-sSEED-NAME.json)"
    )
    args = parser.parse_args()
    header = ["run", *ATTACKS, *args.extra, "circles", "other shapes", "FID", "FID w/o circles", "train s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in args.runs:
        print("| " + " | ".join([run.name, *row(run, args.extra)]) + " |")


if __name__ == "__main__":
    main()
