"""ItD building blocks without a diffusion model: SAE training, feature selection, gate calibration."""

import pytest
import torch

from erasekit.errors import ErasekitError
from erasekit.methods.itd.activations import read_prompts, token_rows
from erasekit.methods.itd.gate import calibrate, gate_report, pool, roc_auc
from erasekit.methods.itd.sae import (
    SaeTrainConfig,
    TopKSAE,
    aux_loss,
    fvu,
    geometric_median,
    topk_codes,
    train_sae,
)
from erasekit.methods.itd.select import erase_set, specific_features, top_features


def sparse_data(n: int = 6000, d: int = 16, atoms: int = 32, active: int = 2, seed: int = 0) -> torch.Tensor:
    """(n, d) points that are sums of `active` random unit atoms with positive weights, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, d, generator=g), dim=1)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:active] for _ in range(n)])
    w = torch.rand(n, active, generator=g) + 0.5
    return (w[..., None] * dictionary[idx]).sum(1) + 3.0


def test_topk_codes_keep_k_largest_nonnegative():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-2.0, -1.0, -3.0, 4.0]])
    z = topk_codes(pre, 2)
    assert torch.equal(z, torch.tensor([[3.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 4.0]]))


def test_geometric_median_ignores_outliers():
    x = torch.cat([torch.randn(200, 3) * 0.1, torch.full((20, 3), 100.0)])
    assert geometric_median(x).norm() < 0.5 < x.mean(0).norm()


def test_sae_learns_sparse_data_and_keeps_unit_decoder():
    acts = sparse_data()
    cfg = SaeTrainConfig(width=64, k=4, aux_k=16, steps=400, batch_size=256, lr=3e-3, dead_tokens=20_000)
    sae, stats = train_sae(acts, cfg)
    assert stats["fvu"] < 0.15, stats
    assert stats["dead_latents"] < 64
    assert torch.allclose(sae.decoder.weight.norm(dim=0), torch.ones(64), atol=1e-4)
    z = sae.encode(acts[:100])
    assert ((z > 0).sum(1) <= 4).all()
    untrained, _ = train_sae(acts, cfg.model_copy(update={"steps": 1}))
    assert stats["fvu"] < 0.5 * fvu(untrained, acts)


def test_training_resumes_to_the_same_weights(tmp_path):
    acts = sparse_data(n=2000)
    cfg = SaeTrainConfig(width=32, k=4, aux_k=8, steps=60, batch_size=128, dead_tokens=500, checkpoint_every=40)
    straight, _ = train_sae(acts, cfg)
    train_sae(acts, cfg.model_copy(update={"steps": 50}), checkpoint_dir=tmp_path)  # checkpoint at step 40
    resumed, _ = train_sae(acts, cfg, checkpoint_dir=tmp_path)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_aux_loss_trains_dead_latents_only():
    sae = TopKSAE(8, 16, 2)
    x = torch.randn(32, 8)
    pre = sae.pre_acts(x)
    dead = torch.zeros(16, dtype=torch.bool)
    assert aux_loss(sae, pre, x, dead, 4) == 0
    dead[5:9] = True
    aux_loss(sae, pre, torch.randn(32, 8), dead, 4).backward()
    rows_with_grad = sae.encoder.weight.grad.abs().sum(1) > 0
    assert rows_with_grad[5:9].all() and not rows_with_grad[:5].any() and not rows_with_grad[9:].any()


def test_save_load_roundtrip(tmp_path):
    sae = TopKSAE(8, 16, 3)
    sae.save(tmp_path, {"fvu": 0.1})
    again, meta = TopKSAE.load(tmp_path)
    x = torch.randn(5, 8)
    assert torch.equal(sae(x)[0], again(x)[0]) and meta["fvu"] == 0.1
    with pytest.raises(ErasekitError):
        TopKSAE.load(tmp_path / "missing")
    with pytest.raises(ErasekitError):
        TopKSAE(8, 4, 5)


def test_published_checkpoint_loads_with_weights_only(tmp_path):
    sae = TopKSAE(8, 16, 3)
    torch.save({k: v.clone() for k, v in sae.state_dict().items()}, tmp_path / "state_dict.pth")
    (tmp_path / "config.json").write_text('{"k": 3, "d_model": 8, "n_dirs": 16, "layer": 2}')
    loaded, cfg = TopKSAE.from_published(tmp_path)
    x = torch.randn(4, 8)
    assert torch.equal(loaded(x)[0], sae(x)[0]) and cfg["layer"] == 2


class NotATensor:
    pass


def test_published_checkpoint_refuses_pickled_code(tmp_path):
    torch.save({"encoder.weight": NotATensor()}, tmp_path / "evil.pt")
    (tmp_path / "config.json").write_text('{"k": 3}')
    with pytest.raises(ErasekitError, match="plain state dict"):
        TopKSAE.from_published(tmp_path)


def test_token_rows_leave_out_bos_and_padding():
    ids = torch.tensor([[1, 5, 6, 9, 9, 9], [1, 7, 9, 9, 9, 9]])
    acts = torch.arange(12.0).reshape(2, 6, 1)
    assert len(token_rows(acts, ids, 9, skip_bos=False)) == 12
    assert len(token_rows(acts, ids, 9)) == 10
    rows = token_rows(acts, ids, 9, skip_padding=True)  # keeps words and the first end token
    assert rows.flatten().tolist() == [1.0, 2.0, 3.0, 7.0, 8.0]


def test_feature_selection_removes_retain_features():
    target = torch.tensor([0.0, 5.0, 4.0, 3.0, 0.1, 0.0])
    retain = [torch.tensor([0.0, 0.0, 6.0, 0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0, 0.0])]
    assert top_features(target, 3) == {1, 2, 3}
    assert top_features(torch.tensor([0.0, 2.0, 0.0]), 3) == {1}  # silent latents never count
    assert specific_features(target, retain, 3) == {1, 3}
    red = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 7.0])
    sets = erase_set({"circle": target, "red": red}, {"circle": retain[1:], "red": retain[:1]}, 2)
    assert sets == {"circle": [1, 2], "red": []}  # each target against its own retain concepts
    shared = [torch.tensor([0.0, 0.0, 6.0, 1.5, 0.0, 1.0])]  # latent 3 is in the retain top-2 but weaker there
    assert specific_features(target, shared, 2) == {1}
    assert erase_set({"circle": target}, {"circle": shared}, 2, "contrast") == {"circle": [1, 3]}
    assert erase_set({"circle": target}, {"circle": shared}, 3, "contrast") == {"circle": [1, 3, 4]}


def test_gate_calibration_and_report():
    pos, neg = torch.tensor([5.0, 6.0, 9.0, 2.5]), torch.tensor([0.5, 1.0, 1.2, 3.0])
    thr = calibrate(pos, neg)
    rep = gate_report(pos, neg, thr)
    assert rep["accuracy"] == pytest.approx(7 / 8)  # the best possible: one score of each side overlaps
    assert 1.2 < thr < 2.5 or 3.0 < thr < 5.0
    assert roc_auc(pos, neg) == pytest.approx(15 / 16)
    assert roc_auc(neg, pos) == pytest.approx(1 / 16)
    one, other = torch.tensor([4.0]), torch.tensor([1.0])
    assert gate_report(one, other, calibrate(one, other))["accuracy"] == 1.0
    scores = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert pool(scores, "max").tolist() == [3.0, 2.0] and pool(scores, "mean").tolist() == [2.0, 2.0]


def test_read_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("a circle\n\n a square \n")
    (tmp_path / "p.csv").write_text("id,prompt\n1,a star\n2,a cross\n")
    assert read_prompts(tmp_path / "p.txt") == ["a circle", "a square"]
    assert read_prompts(tmp_path / "p.csv") == ["a star", "a cross"]
    with pytest.raises(ErasekitError, match="column"):
        read_prompts(tmp_path / "p.csv", column="text")
    with pytest.raises(ErasekitError):
        read_prompts(tmp_path / "none.txt")
