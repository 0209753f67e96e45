"""The HTML report: self-contained, and it renders (images decoded, table and plot present) in headless Chromium.

CI installs Debian's `chromium` package (`apt-get install -y chromium`); without it the rendering test skips.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from erasekit.eval.harness import EvalResult
from erasekit.eval.report import markdown_table, render_html, write_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
PROBE = """<script>window.addEventListener('load', () => {
  document.body.setAttribute('data-widths', [...document.images].map(i => i.naturalWidth).join(','));
});</script>"""


def fake_results() -> dict[str, EvalResult]:
    red = torch.zeros(8, 3, 32, 32)
    red[:, 0] = 1.0  # pure red tiles, easy to find in a screenshot
    out = {}
    for name, (pre, a, fid) in {"Original": (0.9, 0.95, 10.0), "ESD": (0.1, 0.7, 14.5)}.items():
        metrics = {
            "pre_attack_rate": pre,
            "asr_soft": {"asr": a},
            "asr_token": {"asr": a / 2},
            "retained_accuracy": 0.8,
            "fid": fid,
            "fid_without_concept": fid / 2,
            "clip_score": 0.25,
            "wall_s": 12.0,
            "unet_evaluations": {"unet_calls": 10, "unet_rows": 12345},
        }
        if name == "ESD":
            metrics["training"] = {"wall_s": 300.0, "unet_rows": 4000, "unet_calls_per_step": 10.35}
        card = {"detector": {"name": "test", "threshold": 0.45}, "concept": "circle"}
        out[name] = EvalResult(card, metrics, {"erased": red, "attacked_soft": red}, {"attacked_soft": ["<adv> a"]})
    return out


def test_markdown_table_formats_rates_and_counts() -> None:
    table = markdown_table(fake_results()).splitlines()
    assert table[0].startswith("| model | pre-attack rate | ASR soft | ASR token |") and len(table) == 4
    assert (
        "| ESD | 10.0% | 70.0% | 35.0% | n/a | n/a | n/a | 80.0% | 14.50 | 7.25 | 0.250 | 300 | 4,000 | 10.3 | 12.0 | 12,345 |"
        in table
    )
    assert table[2].startswith("| Original |") and "| n/a | n/a |" in table[2]  # the original model trains nothing


def test_html_is_self_contained() -> None:
    page = render_html(fake_results())
    assert page.count("data:image/png;base64,") == 2 * 2 + 1  # two grids per model + the ASR-FID plot
    assert "http://" not in page and "https://" not in page and "<script" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path) -> None:
    path = write_report(fake_results(), tmp_path / "report.html", "test report")
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert '<table id="metrics">' in dom.replace("'", '"') and dom.count("<tr>") == 3
    widths = [int(w) for w in dom.split('data-widths="')[1].split('"')[0].split(",")]
    assert len(widths) == 5 and all(w > 0 for w in widths)  # every embedded image decoded
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120, check=True)
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = int(((px[..., 0] > 240) & (px[..., 1] < 15) & (px[..., 2] < 15)).sum())
    assert red > 8 * 96 * 96  # at least one grid of eight 96-px red tiles is on screen


def test_robustness_table_and_chart_show_every_attack_and_the_worst_case() -> None:
    from erasekit.eval.harness import robustness

    results = fake_results()
    for r in results.values():
        r.metrics["asr_inversion"] = {"asr": 0.5}
        r.metrics["robustness"] = robustness(r.metrics, ["soft", "token", "inversion"], 50)
    esd = results["ESD"].metrics["robustness"]
    assert esd["worst_attack"] == "soft" and esd["worst"] == 0.7 and esd["one_prompt_points"] == 2.0
    row = next(line for line in markdown_table(results).splitlines() if line.startswith("| ESD"))
    assert "| 70.0% | 35.0% | 50.0% | n/a | 70.0% |" in row  # soft, token, inversion, ring-a-bell, worst
    page = render_html(results)
    assert "id='robustness'" in page and "data:image/png;base64," in page
