"""The image stage's limits come from the settings, the edge lowered to what the model can use."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moderation_worker.app import image_limits
from moderation_worker.config import Settings


@pytest.mark.parametrize(
    ("useful_edge", "expected"),
    [
        (None, 1024),  # the scorer does not say (the fake scorer, a processor without a patch grid)
        (616, 616),  # a model that takes 448 x 448 pixels: decoding more is wasted
        (3000, 1024),  # a model that would take more: the setting still bounds it
    ],
)
def test_the_decode_edge_is_the_smaller_of_the_setting_and_the_models_input(useful_edge, expected):
    scorer = SimpleNamespace(useful_image_edge=useful_edge)

    limits = image_limits(Settings(max_image_edge=1024), scorer)

    assert limits.max_edge == expected
    assert limits.max_pixels == Settings().max_image_pixels


def test_a_scorer_without_the_attribute_keeps_the_setting():
    assert image_limits(Settings(max_image_edge=800), object()).max_edge == 800
