"""`evaluate` end to end on the bundled world with tiny settings: card, metrics, reproducibility, artifacts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from erasekit.errors import ErasekitError
from erasekit.eval.harness import EvalConfig, evaluate

TINY = dict(n_target=4, n_retain=4, n_world=6, steps=2, attack_prompts=2)


def test_evaluate_card_and_metrics_are_reproducible() -> None:
    cfg = EvalConfig(**TINY, attacks=[])
    one, two = evaluate(cfg), evaluate(cfg)
    card = one.card
    assert card["detector"]["classes"] == ["circle", "square", "triangle", "cross", "star"]
    assert {s["rows"] for s in card["prompt_sets"].values()} == {4, 6}
    assert card["sampler"]["steps"] == 2 and card["sampler"]["image_size"] == [32, 32]
    assert "cosine" in card["features"]["clip_score"]["clip_score_scale"]
    m = one.metrics
    for key in ("pre_attack_rate", "retained_accuracy", "fid", "clip_score", "concept_rate_on_retain"):
        assert isinstance(m[key], float), key
    assert -1 <= m["clip_score"] <= 1 and m["fid"] >= 0
    assert m["fid_without_concept"] is None or m["fid_without_concept"] >= 0
    assert m["unet_evaluations"]["unet_rows"] == 2 * 2 * (4 + 4 + 6)  # CFG doubles rows; 2 steps; 14 images
    strip = lambda r: {k: v for k, v in r.metrics.items() if k != "wall_s"}  # noqa: E731
    assert strip(one) == strip(two)
    assert torch.equal(one.images["erased"], two.images["erased"])


def test_evaluating_an_artifact_compares_with_the_original(tmp_path, shapes_pipe) -> None:
    shapes_pipe.text_encoder.save_pretrained(tmp_path / "te" / "text_encoder")  # an "erased" encoder = the original
    res = evaluate(EvalConfig(**TINY, attacks=[], text_encoder=str(tmp_path / "te")))
    assert res.card["model"]["text_encoder"] == str(tmp_path / "te")
    torch.testing.assert_close(res.images["original"], res.images["erased"])
    assert res.metrics["original_pre_attack_rate"] == res.metrics["pre_attack_rate"]


def test_attack_results_feed_asr(monkeypatch: pytest.MonkeyPatch) -> None:
    import erasekit.attacks as attacks
    from erasekit.eval import classifiers

    calls = []

    def fake_run_attack(pipe, original, prompts, seeds, kind, config, concept, progress, detector):
        assert isinstance(detector, WhiteIsConcept)  # the evaluation's detector drives the attack's early stop
        calls.append((kind, list(seeds), config.sample_steps, config.soft.steps))
        flat = torch.zeros(len(prompts), 3, 32, 32)
        return [attacks.AttackOutcome(p, s, kind, "x " + p, 0.5, flat[i], flat[i] + 1) for i, (p, s) in
                enumerate(zip(prompts, seeds))]  # fmt: skip

    class WhiteIsConcept(classifiers.WorldConceptDetector):  # flags white images: before = safe, after = unsafe
        def __call__(self, images):
            return images.mean((1, 2, 3)) > 0.5

    monkeypatch.setattr(attacks, "run_attack", fake_run_attack)
    monkeypatch.setattr(classifiers, "make_detector", lambda *a, **k: WhiteIsConcept("circle"))
    res = evaluate(EvalConfig(**TINY, attacks=["soft"], attack_options={"soft": {"steps": 7}}))
    assert calls == [("soft", res_seeds(), 2, 7)]
    a = res.metrics["asr_soft"]
    assert a["asr"] == 1.0 and a["pre_attack_rate"] == 0.0 and a["made_unsafe_by_attack"] == 2
    assert res.prompts["attacked_soft"][0].startswith("x ") and res.card["attacks"]["soft"]["options"]["steps"] == 7


def res_seeds() -> list[int]:
    from erasekit.eval.prompts import shapes_sets

    return shapes_sets("circle", 4, 4, 6)["target"].seeds[:2]


def test_cli_evaluate_json(tmp_path) -> None:
    args = ["evaluate", "--model", "shapes", "--concept", "circle", "--json", "-o", str(tmp_path)]
    args += ["--n-target", "3", "--n-retain", "3", "--n-world", "4", "--steps", "2", "--attack-steps", "2"]
    args += ["--attack-prompts", "2"]
    proc = subprocess.run([sys.executable, "-m", "erasekit", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["protocol"]["detector"]["name"] == "shapes-world ShapeClassifier"
    assert {"pre_attack_rate", "retained_accuracy", "fid", "clip_score"} <= out["metrics"].keys()
    for kind in ("soft", "token"):  # the engine's real attacks ran, on 2 prompts with 2 steps each
        assert out["metrics"][f"asr_{kind}"]["n"] == 2 and out["protocol"]["attacks"][kind]["options"]["steps"] == 2
    assert (tmp_path / "report.html").is_file() and json.loads((tmp_path / "result.json").read_text())["metrics"]
    bad = subprocess.run([sys.executable, "-m", "erasekit", "evaluate", "--concept", "dragon"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no detector" in bad.stderr


def test_evaluate_nudity_protocol_on_a_local_model_folder(tmp_path, shapes_pipe) -> None:
    """The Stable Diffusion path, offline: a local pipeline folder, I2P and COCO CSVs, real images, NudeNet."""
    from erasekit.imaging import to_pil
    from erasekit.pipeline import bundle_dir

    shapes_pipe.save_pretrained(tmp_path / "sd")
    (tmp_path / "i2p.csv").write_text(
        "prompt,evaluation_seed,evaluation_guidance,categories,nudity_percentage\n"
        "a red circle,1,5.0,sexual,60\na blue star,2,3.0,sexual,70\na green cross,3,5.0,violence,0\n"
    )
    (tmp_path / "coco.csv").write_text("case_number,prompt,evaluation_seed\n0,a white square,5\n1,a gray star,6\n")
    (tmp_path / "real").mkdir()
    for i, im in enumerate(to_pil(torch.rand(3, 3, 32, 32))):
        im.save(tmp_path / "real" / f"{i}.png")
    cfg = EvalConfig(
        model=str(tmp_path / "sd"), concept="nudity", preset="six-class", prompts=str(tmp_path / "i2p.csv"),
        category="sexual", coco=str(tmp_path / "coco.csv"), reference_images=str(tmp_path / "real"),
        clip_model=str(bundle_dir() / "clip"), steps=2, attacks=[],
    )  # fmt: skip
    res = evaluate(cfg)
    card = res.card
    assert card["detector"]["preset"] == "six-class" and card["detector"]["threshold"] == 0.5
    assert card["prompt_sets"]["target"]["rows"] == 2 and card["sampler"]["guidance"].startswith("per row")
    assert card["features"]["fid_reference"]["rows"] == 3
    assert res.metrics["pre_attack_rate"] == 0.0  # NudeNet finds nothing in 32-px shapes
    assert res.metrics["fid"] > 0 and "retained_accuracy" not in res.metrics
    with pytest.raises(ErasekitError, match="--clip-model"):
        evaluate(cfg.model_copy(update={"clip_model": None}))


def test_fid_without_concept_uses_only_rows_without_it() -> None:
    """Generated rows whose prompt asks for the concept, and reference scenes that show it, are left out."""
    from types import SimpleNamespace

    from erasekit.eval.harness import _fid_without_concept, _reference_scenes
    from erasekit.eval.metrics import fid_from_features
    from erasekit.world.prompt_sets import PromptSet

    cfg = EvalConfig(n_world=40)
    g = torch.Generator().manual_seed(0)
    images, ref = torch.rand(40, 3, 4, 4, generator=g), torch.rand(40, 3, 4, 4, generator=g)
    shapes = [i % 5 for i in range(40)]
    ps = PromptSet("w", ["p"] * 40, list(range(40)), {"shape": shapes, "colour": [0] * 40})
    feats = SimpleNamespace(image_features=lambda x: x.flatten(1)[:, :6])
    detector = SimpleNamespace(attribute="shape", index=0)
    got = _fid_without_concept(cfg, ps, detector, feats.image_features(images), feats.image_features(ref))
    keep_ref = [i for i, sc in enumerate(_reference_scenes(cfg, 40)) if sc.shape != 0]
    keep_gen = [i for i, v in enumerate(shapes) if v != 0]
    assert 0 < len(keep_ref) < 40
    assert got == pytest.approx(
        fid_from_features(feats.image_features(ref[keep_ref]), feats.image_features(images[keep_gen]))
    )
