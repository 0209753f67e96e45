import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from erasekit import ErasekitError, load_pipeline
from erasekit.text import check_prompts, token_ids


def test_shapes_pipeline_is_sd_classes(shapes_pipe):
    assert isinstance(shapes_pipe, StableDiffusionPipeline)
    assert isinstance(shapes_pipe.unet, UNet2DConditionModel) and isinstance(shapes_pipe.vae, AutoencoderKL)
    assert isinstance(shapes_pipe.text_encoder, CLIPTextModel) and isinstance(shapes_pipe.scheduler, DDIMScheduler)
    assert shapes_pipe.safety_checker is None and shapes_pipe.unet.dtype == torch.float32


def test_save_pretrained_round_trip(shapes_pipe, tmp_path):
    shapes_pipe.save_pretrained(tmp_path / "p")
    again = load_pipeline(str(tmp_path / "p"))
    for a, b in zip(shapes_pipe.unet.parameters(), again.unet.parameters()):
        assert torch.equal(a, b)
    ids = token_ids(again.tokenizer, ["a red circle"])
    assert torch.equal(ids, token_ids(shapes_pipe.tokenizer, ["a red circle"]))


def test_text_encoder_replacement_layouts(shapes_pipe, tmp_path):
    te = shapes_pipe.text_encoder
    # erasekit artifact layout: <dir>/text_encoder/
    te.save_pretrained(tmp_path / "run" / "text_encoder")
    # bare component folder, and the published AdvUnlearn layout: <repo>/nudity_unlearned/
    te.save_pretrained(tmp_path / "bare")
    te.save_pretrained(tmp_path / "repo" / "nudity_unlearned")
    te.save_pretrained(tmp_path / "repo2" / "nudity_unlearned")
    te.save_pretrained(tmp_path / "repo2" / "vangogh_unlearned")
    for folder, sub in [("run", None), ("bare", None), ("repo", None), ("repo2", "vangogh_unlearned")]:
        pipe = load_pipeline("shapes", text_encoder=tmp_path / folder, text_encoder_subfolder=sub)
        assert torch.equal(pipe.text_encoder.final_layer_norm.weight, te.final_layer_norm.weight)
    with pytest.raises(ErasekitError, match="pick one of"):
        load_pipeline("shapes", text_encoder=tmp_path / "repo2")


def test_loader_errors_are_one_line(tmp_path):
    cases = [
        ({"spec": "no-such-model"}, "unknown model"),
        ({"spec": str(tmp_path)}, "not a diffusers pipeline folder"),
        ({"spec": "shapes", "text_encoder": tmp_path / "missing"}, "does not exist"),
        ({"spec": "CompVis/stable-diffusion-v1-4"}, "pass the local folder"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ErasekitError, match=message) as info:
            load_pipeline(**kwargs)
        assert "\n" not in str(info.value)


def test_mismatched_text_encoder_hidden_size(tmp_path):
    cfg = CLIPTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    CLIPTextModel(cfg).save_pretrained(tmp_path / "te")
    with pytest.raises(ErasekitError, match="hidden size 32"):
        load_pipeline("shapes", text_encoder=tmp_path / "te")


def test_prompt_checks(shapes_pipe):
    with pytest.raises(ErasekitError, match="empty"):
        check_prompts(shapes_pipe.tokenizer, [])
    with pytest.raises(ErasekitError, match="allows 24"):
        check_prompts(shapes_pipe.tokenizer, ["a red circle " * 10])
    with pytest.raises(ErasekitError, match="attack tokens"):
        check_prompts(shapes_pipe.tokenizer, ["a red circle on a white background " * 2], reserve=9)
    check_prompts(shapes_pipe.tokenizer, ["a red circle on a white background"])
