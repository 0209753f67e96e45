from erasekit.methods import with_defaults
from erasekit.methods.esd import EsdConfig
from erasekit.world.anchor import nearest_value


def test_nearest_value_is_the_closest_other_value_of_the_attribute(shapes_pipe):
    """Circle's nearest shape in the bundled encoder is square; erased values are never picked; concepts of
    different attributes have no common neighbour, so the anchor drops the word."""
    near = lambda cs: nearest_value(cs, shapes_pipe.tokenizer, shapes_pipe.text_encoder)  # noqa: E731
    assert (near(["circle"]), near(["red"]), near(["star"])) == ("square", "orange", "cross")
    assert near(["circle", "square"]) in {"triangle", "cross", "star"}
    assert near(["circle", "red"]) == ""


def test_callable_defaults_are_called_only_for_unset_options():
    calls = []
    default = lambda cfg: calls.append(cfg.concepts) or ["square"]  # noqa: E731
    assert with_defaults(EsdConfig(concepts=["circle"]), {"anchor": default}).anchor == ["square"]
    assert with_defaults(EsdConfig(concepts=["circle"], anchor=None), {"anchor": default}).anchor is None
    assert calls == [["circle"]]
