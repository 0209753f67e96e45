import pytest
import torch

import erasekit.world.train as wt
from erasekit.pipeline import load_pipeline
from erasekit.world.evaluators import ShapeClassifier

TINY = dict(
    vae_steps=2, classifier_steps=2, clip_steps=2, unet_steps=4, checkpoint_every=2,
    vae_batch=4, classifier_batch=4, clip_batch=4, unet_batch=4,
)  # fmt: skip


def _weights(models):
    return {f"{n}.{k}": v.clone() for n in ("unet", "text_encoder") for k, v in models[n].state_dict().items()}


def test_training_is_deterministic_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = wt.WorldTrainConfig(**TINY)
    straight = _weights(wt.train_world(tmp_path / "a", cfg))

    # Kill the second run right after the UNet stage's first checkpoint (step 2 of 4) ...
    real_save = wt.save_checkpoint

    def save_then_die(folder, modules, optimizer, step, extra=None):
        real_save(folder, modules, optimizer, step, extra)
        if "unet" in modules and step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(wt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        wt.train_world(tmp_path / "b", cfg)
    monkeypatch.setattr(wt, "save_checkpoint", real_save)
    # ... then run the same command again: it resumes and ends where the uninterrupted run ended.
    resumed = _weights(wt.train_world(tmp_path / "b", cfg))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not torch.equal(straight["unet.conv_in.weight"], wt.components.make_unet().conv_in.weight)


def test_export_bundle_loads_as_pipeline(tmp_path):
    models = wt.train_world(tmp_path / "w", wt.WorldTrainConfig(**TINY))
    wt.export_bundle(models, tmp_path / "bundle")
    pipe = load_pipeline(str(tmp_path / "bundle" / "pipeline"))
    assert pipe.unet.config.sample_size == 8 and pipe.vae.config.scaling_factor != 0.18215
    assert pipe.scheduler.config.set_alpha_to_one is False
    clf = ShapeClassifier.load(tmp_path / "bundle" / "classifier")
    assert clf.predict(torch.zeros(2, 3, 32, 32))["shape"].shape == (2,)
