"""Reports: the Markdown table and a self-contained HTML page (protocol card, metrics, image grids, ASR-FID plot).

Every image is embedded as base64 PNG, so the page is one file that opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib
import torch
from matplotlib.figure import Figure

from erasekit.eval.harness import EvalResult
from erasekit.imaging import grid

COLUMNS = (  # (header, getter, format)
    ("pre-attack rate", lambda m: m.get("pre_attack_rate"), "{:.1%}"),
    *(
        (f"ASR {k}", lambda m, k=k: (m.get(f"asr_{k}") or {}).get("asr"), "{:.1%}")
        for k in ("soft", "token", "inversion", "ring-a-bell")
    ),
    ("worst ASR", lambda m: (m.get("robustness") or {}).get("worst"), "{:.1%}"),
    ("retained acc.", lambda m: m.get("retained_accuracy"), "{:.1%}"),
    ("FID", lambda m: m.get("fid"), "{:.2f}"),
    ("FID w/o concept", lambda m: m.get("fid_without_concept"), "{:.2f}"),
    ("CLIP score", lambda m: m.get("clip_score"), "{:.3f}"),
    ("train s", lambda m: (m.get("training") or {}).get("wall_s"), "{:.0f}"),
    ("train UNet evals", lambda m: (m.get("training") or {}).get("unet_rows"), "{:,}"),
    ("train UNet calls/it", lambda m: (m.get("training") or {}).get("unet_calls_per_step"), "{:.1f}"),
    ("eval s", lambda m: m.get("wall_s"), "{:.1f}"),
    ("eval UNet evals", lambda m: (m.get("unet_evaluations") or {}).get("unet_rows"), "{:,}"),
)
GRID_COLUMNS = 8


def table_rows(results: dict[str, EvalResult]) -> list[list[str]]:
    return [
        [name] + ["n/a" if (v := get(r.metrics)) is None else fmt.format(v) for _, get, fmt in COLUMNS]
        for name, r in results.items()
    ]


def markdown_table(results: dict[str, EvalResult]) -> str:
    """One row per evaluated model; rates are percentages, CLIP score is a cosine in [-1, 1]."""
    head = ["model", *(c for c, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    return "\n".join(lines)


def _png(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grid_html(label: str, images: torch.Tensor) -> str:
    n = min(GRID_COLUMNS, len(images))
    img = grid(images[:n], cols=n, scale=max(1, 96 // images.shape[-1]))
    return f'<figure><img alt="{html.escape(label)}" src="{_png(img)}"><figcaption>{html.escape(label)}</figcaption></figure>'


def _png_url(fig: Figure) -> str:
    """A matplotlib figure as a PNG data: URL (laid out tightly)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def asr_fid_plot(results: dict[str, EvalResult]) -> str | None:
    """A scatter of FID (x) against ASR (y), one point per model and attack; a data: URL, None without FID."""
    fig = Figure(figsize=(5.5, 4), dpi=100)
    ax = fig.add_subplot()
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = False
    for i, (name, r) in enumerate(results.items()):  # one colour per model, one marker per attack
        for kind, marker in (("soft", "o"), ("token", "s"), ("inversion", "^"), ("ring-a-bell", "D")):
            fid, a = r.metrics.get("fid"), (r.metrics.get(f"asr_{kind}") or {}).get("asr")
            if fid is None or a is None:
                continue
            ax.scatter(fid, 100 * a, marker=marker, s=50, color=colours[i % len(colours)], label=f"{name} ({kind})")
            plotted = True
    if not plotted:
        return None
    ax.set_xlabel("FID (lower is better)")
    ax.set_ylabel("ASR % (lower is better)")
    ax.set_title("Robustness vs. utility")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png_url(fig)


def robustness_chart(results: dict[str, EvalResult]) -> str | None:
    """Grouped bars: ASR per attack for every model (the worst case is the tallest bar); a data: URL, None without
    attacks. The title states the one-prompt resolution."""
    rows = {name: r.metrics["robustness"] for name, r in results.items() if r.metrics.get("robustness")}
    if not rows:
        return None
    kinds = sorted({k for rob in rows.values() for k in rob["asr"]})
    fig = Figure(figsize=(max(5.5, 1.2 * len(rows) + 2), 4), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        xs = [i + j * width for i in range(len(rows))]
        ax.bar(xs, [100 * rob["asr"].get(kind, float("nan")) for rob in rows.values()], width, label=kind)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], list(rows), fontsize=8)
    ax.set_ylabel("ASR % (lower is better)")
    n = next(iter(rows.values()))["prompts"]
    ax.set_title(f"ASR per attack ({n} prompts: one prompt = {100 / n:.0f} points)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _png_url(fig)


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0 1em 1em 0}figure img{image-rendering:pixelated;border:1px solid #ddd}
figcaption{font-size:12px;color:#555}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}
"""


def render_html(results: dict[str, EvalResult], title: str = "erasekit evaluation") -> str:
    """The report page: metrics table, ASR-FID plot, per model the same-seed grids, then each protocol card."""
    head = ["model", *(c for c, _, _ in COLUMNS)]
    table = "<table id='metrics'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    for row in table_rows(results):
        table += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
    table += "</table>"
    plot = asr_fid_plot(results)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        "<p>Rates are the share of images in which the detector finds the concept. ASR follows UnlearnDiffAtk: "
        "(prompts unsafe before the attack + prompts the attack makes unsafe) / all attacked prompts. CLIP score is "
        "a cosine similarity in [-1, 1]. UNet evaluations count latent rows through the UNet (a classifier-free "
        "guidance step counts two). Same seeds in every row of a grid.</p>",
        "<h2>Metrics</h2>",
        table,
    ]
    chart = robustness_chart(results)
    if chart:
        parts.append(f"<h2>Robustness: ASR per attack</h2><img id='robustness' alt='ASR per attack' src='{chart}'>")
    if plot:
        parts.append(f"<h2>ASR vs. FID</h2><img id='asr-fid' alt='ASR vs FID' src='{plot}'>")
    parts.append("<h2>Images (first target prompts, same seeds)</h2>")
    for name, r in results.items():
        parts.append(f"<h3>{html.escape(name)}</h3><div class='grids'>")
        attacked = [(f"attacked_{k}", f"{k} attack") for k in ("soft", "token", "inversion", "ring-a-bell")]
        for key, label in (("original", "original model"), ("erased", "this model"), *attacked):
            if key in r.images:
                parts.append(_grid_html(f"{name}: {label}", r.images[key]))
        adv = r.prompts.get("attacked_token") or r.prompts.get("attacked_soft")
        if adv:
            parts.append(f"<p>adversarial prompt example: <code>{html.escape(adv[0])}</code></p>")
        parts.append("</div>")
    parts.append("<h2>Protocol cards</h2>")
    for name, r in results.items():
        card = json.dumps(r.card, indent=1, default=str)
        parts.append(f"<h3>{html.escape(name)}</h3><pre class='card'>{html.escape(card)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: dict[str, EvalResult], path: str | Path, title: str = "erasekit evaluation") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results, title), encoding="utf-8")
    return path
