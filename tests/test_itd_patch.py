"""ItdPatch on the bundled shapes pipeline: the hook, the gate, injection modes, gradients, saving, erase()."""

import json

import pytest
import torch
from typer.testing import CliRunner

from erasekit.domains.shapes_itd import shapes_itd_inputs
from erasekit.errors import ErasekitError
from erasekit.methods.itd import ItdConfig, ItdPatch, erase
from erasekit.methods.itd.activations import collect
from erasekit.methods.itd.sae import TopKSAE
from erasekit.text import encode, token_ids

PROMPTS = ["a red circle on a white background", "a blue square", "a green star on a black background"]


def exact_sae(d: int) -> TopKSAE:
    """An SAE that reconstructs exactly: latent j = relu(x_j), latent d + j = relu(-x_j)."""
    sae = TopKSAE(d, 2 * d, d)
    eye = torch.eye(d)
    sae.encoder.weight.data = torch.cat([eye, -eye])
    sae.decoder.weight.data = torch.cat([eye, -eye], 1)
    return sae


@pytest.fixture(scope="module")
def hidden(shapes_pipe):
    acts, _ = collect(shapes_pipe, PROMPTS, layer=1)
    return acts


def final(pipe, prompts=PROMPTS):
    with torch.no_grad():
        return encode(pipe.text_encoder, token_ids(pipe.tokenizer, prompts))


def test_feature_deactivation_matches_the_equation(hidden):
    d = hidden.shape[-1]
    for injection in ("replace", "add_error"):
        patch = ItdPatch(exact_sae(d), 1, {"c": [3]}, tau=0.0, injection=injection)
        out, fired = patch.edit(hidden)
        expected = hidden.clone()
        expected[:, 1:, 3] = expected[:, 1:, 3].clamp(max=0)  # feature 3 = positive part of coordinate 3
        assert torch.allclose(out, expected, atol=1e-5) and fired.all()
    tau = ItdPatch(exact_sae(d), 1, {"c": [3]}, tau=-8.0).edit(hidden)[0]
    pos = hidden[:, 1:, 3].clamp(min=0)
    assert torch.allclose(tau[:, 1:, 3], hidden[:, 1:, 3] - 9.0 * pos, atol=1e-4)


def test_gate_leaves_prompts_under_the_threshold_alone(hidden):
    d = hidden.shape[-1]
    patch = ItdPatch(exact_sae(d), 1, {"c": [3]}, tau=0.0)
    score = patch.scores(hidden)[..., 0]
    assert torch.allclose(score, hidden[:, 1:, 3].clamp(min=0) ** 2, atol=1e-4)  # eq. 8 for the exact SAE
    per_prompt = score.amax(1)
    patch.thresholds = {"c": float(per_prompt.detach().median())}
    out, fired = patch.edit(hidden)
    fired = fired[:, 0]
    assert fired.tolist() == (per_prompt > patch.thresholds["c"]).tolist() and 0 < fired.sum() < len(PROMPTS)
    assert torch.equal(out[~fired], hidden[~fired])
    assert not torch.equal(out[fired], hidden[fired])
    assert torch.equal(out[:, 0], hidden[:, 0])  # BOS passes through
    patch.pooling = "token"
    out, _ = patch.edit(hidden)
    untouched = score <= patch.thresholds["c"]
    assert torch.equal(out[:, 1:][untouched], hidden[:, 1:][untouched])


def test_each_concept_gate_turns_down_only_its_own_features(hidden):
    d = hidden.shape[-1]
    patch = ItdPatch(exact_sae(d), 1, {"a": [3], "b": [4]}, tau=0.0)
    score = patch.scores(hidden).amax(1).detach()  # (B, 2)
    assert torch.allclose(score[:, 1], hidden[:, 1:, 4].clamp(min=0).pow(2).amax(1), atol=1e-4)
    patch.thresholds = {"a": float(score[:, 0].median()), "b": float(score[:, 1].max()) + 1.0}  # b never fires
    out, fired = patch.edit(hidden)
    assert fired[:, 0].tolist() == (score[:, 0] > patch.thresholds["a"]).tolist() and not fired[:, 1].any()
    rows = fired[:, 0]
    assert torch.allclose(out[rows][:, 1:, 3], hidden[rows][:, 1:, 3].clamp(max=0), atol=1e-5)
    assert torch.allclose(out[:, :, 4], hidden[:, :, 4], atol=1e-5)  # b's feature is left alone everywhere


def test_increase_score_removes_the_sae_error(hidden):
    torch.manual_seed(0)
    sae = TopKSAE(hidden.shape[-1], 96, 6)  # random: a large reconstruction error
    plain = ItdPatch(sae, 1, {"c": [1, 5, 9]}, tau=-2.0, score="error").scores(hidden)
    added = ItdPatch(sae, 1, {"c": [1, 5, 9]}, tau=-2.0, score="increase").scores(hidden)
    err = (hidden[:, 1:] - sae(hidden[:, 1:])[0]).pow(2).sum(-1, keepdim=True)
    assert torch.allclose(plain - added, err, atol=1e-3) and err.min() > 0


def soft_grad(pipe) -> torch.Tensor:
    """Gradient of a loss on the encoder output w.r.t. a soft embedding added at the token-embedding module."""
    soft = torch.zeros(1, 1, pipe.text_encoder.config.hidden_size, requires_grad=True)
    handle = pipe.text_encoder.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out + soft)
    try:
        encode(pipe.text_encoder, token_ids(pipe.tokenizer, PROMPTS[:1])).pow(2).sum().backward()
    finally:
        handle.remove()
    return soft.grad


def test_attach_detach_and_gradients_through_soft_embeddings(shapes_pipe):
    pipe = shapes_pipe
    d = pipe.text_encoder.config.hidden_size
    before, grad_before = final(pipe), soft_grad(pipe)
    patch = ItdPatch(exact_sae(d), 1, {"c": list(range(d))}, tau=0.0).attach(pipe)
    try:
        after = final(pipe)
        assert not torch.allclose(before, after) and patch.last_fired.all()
        grad = soft_grad(pipe)
        assert grad.abs().sum() > 0 and not torch.allclose(grad, grad_before)  # flows through the patch
    finally:
        patch.detach()
    assert torch.equal(final(pipe), before)


def test_no_features_or_tau_one_is_identity(hidden):
    d = hidden.shape[-1]
    assert torch.equal(ItdPatch(exact_sae(d), 1, {}).edit(hidden)[0], hidden)
    out = ItdPatch(exact_sae(d), 1, {"c": [1, 2]}, tau=1.0, injection="add_error").edit(hidden)[0]
    assert torch.allclose(out, hidden, atol=1e-6)


def test_save_load_and_wrong_inputs(tmp_path, shapes_pipe, hidden):
    d = hidden.shape[-1]
    patch = ItdPatch(
        exact_sae(d), 1, {"circle": [3], "red": [4, 70]}, -8.0, {"circle": 0.5, "red": 0.7}, "replace", "mean"
    )
    patch.save(tmp_path)
    again = ItdPatch.load(tmp_path)
    assert again.concepts == ["circle", "red"] and again.erase_indices().tolist() == [3, 4, 70]
    assert again.thresholds == {"circle": 0.5, "red": 0.7} and again.score == "increase"
    assert torch.equal(again.edit(hidden)[0], patch.edit(hidden)[0])
    assert json.loads((tmp_path / "erasekit.json").read_text())["component"] == "itd_patch"
    with pytest.raises(ErasekitError, match="not an ItD patch"):
        ItdPatch.load(tmp_path / "nothing")
    with pytest.raises(ErasekitError, match="wide"):
        ItdPatch(exact_sae(d + 1), 1, {"c": [0]}).attach(shapes_pipe)
    with pytest.raises(ErasekitError, match="layer"):
        ItdPatch(exact_sae(d), 9, {"c": [0]}).attach(shapes_pipe)


def test_from_published(tmp_path, shapes_pipe):
    d = shapes_pipe.text_encoder.config.hidden_size
    sae = exact_sae(d)
    torch.save(sae.state_dict(), tmp_path / "state_dict.pth")
    (tmp_path / "config.json").write_text(json.dumps({"k": d, "d_model": d, "n_dirs": 2 * d}))
    with pytest.raises(ErasekitError, match="layer"):
        ItdPatch.from_published(tmp_path)
    patch = ItdPatch.from_published(tmp_path, layer=1).attach(shapes_pipe)
    try:
        assert torch.allclose(final(shapes_pipe), final_without(shapes_pipe, patch), atol=1e-5)
    finally:
        patch.detach()


def final_without(pipe, patch):
    patch.detach()
    try:
        return final(pipe)
    finally:
        patch.attach(pipe)


def shapes_erase(pipe, cfg: ItdConfig, output):
    return erase(pipe, cfg, output, shapes_itd_inputs(cfg.concepts, cfg), progress=False)


def test_erase_end_to_end_two_concepts(tmp_path, shapes_pipe):
    cfg = ItdConfig(
        concepts=["circle", "red"], layer=1, width=64, k=4, steps=40, batch_size=256, corpus_size=200,
        select_prompts=8, calib_prompts=12, k_sel=4,
    )  # fmt: skip
    summary = shapes_erase(shapes_pipe, cfg, tmp_path)
    assert set(summary["features"]) == {"circle", "red"}
    assert summary["sae"]["tokens"] == 200 * (shapes_pipe.tokenizer.model_max_length - 1)  # BOS left out
    assert 0 < summary["sae"]["fvu"] < 1 and summary["sae"]["dead_latents"] < 64
    assert summary["retain"] == {"circle": ["square", "triangle", "cross", "star"],
                                 "red": ["green", "blue", "yellow", "purple", "orange"]}  # fmt: skip
    held = summary["gate"]["heldout"]
    assert held["per_concept"]["circle"]["auc"] > 0.9 and held["n_target"] == 24 and held["n_others"] == 12
    assert all(
        held["per_concept"][c]["n_target"] == 12 == held["per_concept"][c]["n_others"] for c in ("circle", "red")
    )
    patch = ItdPatch.load(tmp_path)
    assert patch.thresholds == summary["gate"]["thresholds"] and set(patch.thresholds) == {"circle", "red"}
    assert patch.layer == 1
    reused = shapes_erase(
        shapes_pipe, cfg.model_copy(update={"sae_path": str(tmp_path), "gate": False}), tmp_path / "again"
    )
    assert reused["features"] == summary["features"] and ItdPatch.load(tmp_path / "again").thresholds is None
    small = dict(concepts=["circle"], sae_path=str(tmp_path), gate=False, select_prompts=4, k_sel=4)
    assert shapes_erase(shapes_pipe, ItdConfig(**small), tmp_path / "adopt")["layer"] == 1  # the SAE's layer
    with pytest.raises(ErasekitError, match="reads layer 1"):
        shapes_erase(shapes_pipe, ItdConfig(**small, layer=2), tmp_path / "clash")


def test_sae_train_cli(tmp_path):
    from erasekit.cli import _register_commands, app

    _register_commands()
    args = ["sae", "train", "-o", str(tmp_path), "--layer", "1", "--width", "32", "--k", "4", "--steps", "20"]
    result = CliRunner().invoke(app, [*args, "--n-prompts", "50", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output.strip().splitlines()[-1])
    assert stats["width"] == 32 and 0 < stats["fvu"] < 1 and stats["dead_latents"] < 32 and stats["tokens"] == 50 * 23
    assert TopKSAE.load(tmp_path)[0].k == 4
