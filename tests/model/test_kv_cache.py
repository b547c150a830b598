"""The KV-cache adapter finds the argument and the returned cache by type, not by one name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import Cache, DynamicCache

from moderation_worker.model.kv_cache import cache_argument, cache_rows, returned_cache


class _OldForward:
    def forward(self, input_ids=None, past_key_values: Cache | None = None, use_cache: bool = False): ...


class _NewForward:
    def forward(self, input_ids=None, cache: Cache | None = None, use_cache: bool | None = None): ...


class _RenamedAgain:
    # A future release: a new name, still annotated with the Cache type.
    def forward(
        self, input_ids=None, kv: Cache | None = None, cache_position: torch.Tensor | None = None
    ): ...


class _Untyped:
    def forward(self, input_ids=None, past_key_values=None): ...


class _NoCache:
    def forward(
        self, input_ids=None, use_cache: bool = False, cache_position: torch.Tensor | None = None
    ): ...


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_OldForward(), "past_key_values"),
        (_NewForward(), "cache"),
        (_RenamedAgain(), "kv"),
        (_Untyped(), "past_key_values"),
        (_NoCache(), None),
    ],
    ids=["before-5.24", "5.24", "renamed-again", "untyped", "none"],
)
def test_the_cache_argument_is_found_by_its_type(model, expected):
    assert cache_argument(model) == expected


# Plain dataclasses: transformers 5.24's ModelOutput renames past_key_values fields of its subclasses
# itself, which would hide the case this test is about. The real outputs are covered by the scorer tests.
@dataclass
class _OldOutput:
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None


@dataclass
class _NewOutput:
    logits: torch.Tensor | None = None
    cache: Cache | None = None


@pytest.mark.parametrize("output_class", [_OldOutput, _NewOutput], ids=["past_key_values", "cache"])
def test_the_returned_cache_is_found_whatever_its_field_is_called(output_class):
    cache = DynamicCache()
    assert returned_cache(output_class(logits=torch.zeros(1), **{_field(output_class): cache})) is cache


def _field(output_class) -> str:
    return "cache" if output_class is _NewOutput else "past_key_values"


def test_an_output_without_a_cache_is_an_error_not_a_silent_none():
    with pytest.raises(RuntimeError, match="found 0"):
        returned_cache(_NewOutput(logits=torch.zeros(1)))


def test_cache_rows_copies_the_chosen_rows_and_leaves_the_source_alone(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir).get_text_config()
    source = DynamicCache(config=config)
    layers = config.num_hidden_layers
    for layer in range(layers):
        keys = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4) + layer
        source.update(keys, -keys, layer)

    picked = cache_rows(source, torch.tensor([1, 1, 0]), config=config)

    assert picked.get_seq_length() == 3 and len(picked.layers) == layers
    for layer in range(layers):
        original = source.layers[layer].keys
        assert torch.equal(picked.layers[layer].keys, original[[1, 1, 0]])
        assert torch.equal(picked.layers[layer].values, -original[[1, 1, 0]])
    # appending to the copy (what a suffix pass does) does not grow the source
    picked.update(torch.zeros(3, 1, 2, 4), torch.zeros(3, 1, 2, 4), 0)
    assert source.get_seq_length() == 3 and source.layers[0].keys.shape[0] == 2
