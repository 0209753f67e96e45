"""Eq. 2's anchor on the shapes world: the nearest other value of the concept's attribute in the bundled encoder,
written out in the shapes recipes and computed by the domain only for several concepts at once."""

from __future__ import annotations

import pytest

from erasekit.config import load_recipe
from erasekit.domains import domain_for
from erasekit.world.anchor import nearest_value


def test_nearest_value_is_the_closest_other_value_of_the_attribute(shapes_pipe):
    """Circle's nearest shape in the bundled encoder is square; erased values are never picked; concepts of
    different attributes have no common neighbour, so the anchor drops the word."""
    near = lambda cs: nearest_value(cs, shapes_pipe.tokenizer, shapes_pipe.text_encoder)  # noqa: E731
    assert (near(["circle"]), near(["red"]), near(["star"])) == ("square", "orange", "cross")
    assert near(["circle", "square"]) in {"triangle", "cross", "star"}
    assert near(["circle", "red"]) == ""


@pytest.mark.parametrize("recipe", ["shapes/advunlearn", "shapes/advunlearn-atesd"])
def test_the_written_out_anchor_is_what_the_encoder_computes(shapes_pipe, recipe):
    """The recipe's per-concept anchor mapping holds exactly nearest_value for every world value it lists."""
    anchor = load_recipe(recipe)["anchor"]
    assert len(anchor) == 14  # every shape and colour of the world
    for concept, words in anchor.items():
        assert words == [nearest_value([concept], shapes_pipe.tokenizer, shapes_pipe.text_encoder)], concept


def test_the_domain_picks_the_concept_entry_or_computes_a_joint_anchor(shapes_pipe):
    shapes = domain_for("shapes")
    recipe = load_recipe("shapes/advunlearn")
    assert shapes.recipe_options(recipe, ["circle"])["anchor"] == ["square"]
    joint = shapes.recipe_options(recipe, ["circle", "square"])["anchor"]
    assert joint == [nearest_value(["circle", "square"], shapes_pipe.tokenizer, shapes_pipe.text_encoder)]
    assert shapes.recipe_options(recipe, ["circle", "red"])["anchor"] == [""]  # no common neighbour: drop the word
    assert shapes.recipe_options(load_recipe("shapes/esd"), ["circle"]) == load_recipe("shapes/esd")  # no anchor
