"""`erasekit world check`: is the bundled world fit for erasure experiments?

Measures the classifier on crisp images and on VAE reconstructions, and the pipeline's shape / colour
accuracy on prompts from held-out templates (25 DDIM steps), judged by that classifier.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from pydantic import BaseModel, ConfigDict, Field

from erasekit.generation import generate
from erasekit.world.evaluators import ShapeClassifier
from erasekit.world.prompt_sets import world_set
from erasekit.world.train import world_batch


class CheckConfig(BaseModel):
    """Options of `erasekit world check`: generated images, sampler steps, guidance and seed."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(200, ge=1)
    sample_steps: int = Field(25, ge=1)
    guidance: float = 5.0
    seed: int = 0


@torch.no_grad()
def classifier_accuracy(classifier: ShapeClassifier, vae, n: int = 1000, seed: int = 12345) -> dict[str, float]:
    """Accuracy of all three heads together on n fresh crisp images and their VAE reconstructions."""
    x, _, labels = world_batch(n, torch.Generator().manual_seed(seed))
    recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    out = {}
    for name, images in (("crisp", x), ("vae", recon)):
        pred = classifier.predict(images)
        out[f"classifier_{name}"] = torch.stack([pred[k] == labels[k] for k in labels]).all(0).float().mean().item()
    return out


def generation_accuracy(
    pipe: StableDiffusionPipeline,
    classifier: ShapeClassifier,
    n: int = 200,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 0,
) -> dict[str, float]:
    """Shape / colour / both accuracy of n generated images from held-out templates."""
    ps = world_set(n, split="heldout", seed=seed)
    images = generate(pipe, ps.prompts, ps.seeds, steps=steps, guidance=guidance, progress=True)
    pred = classifier.predict(images * 2 - 1)
    shape = pred["shape"] == torch.tensor(ps.labels["shape"])
    colour = pred["colour"] == torch.tensor(ps.labels["colour"])
    return {
        "shape": shape.float().mean().item(),
        "colour": colour.float().mean().item(),
        "shape_and_colour": (shape & colour).float().mean().item(),
        "prompts": n,
        "steps": steps,
        "guidance": guidance,
    }
