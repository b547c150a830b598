"""How prompts are split into a shared prefix and suffixes, and how rows are grouped into passes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moderation_worker.model.prefix import (
    MIN_CACHED_HEAD_TOKENS,
    HeadKV,
    cacheable_head,
    group_by_budget,
    split_prompts,
)

IMAGE = 99


def test_the_prefix_is_the_longest_run_of_ids_every_prompt_starts_with():
    rows = [[1, IMAGE, IMAGE, 5, 6, 7], [1, IMAGE, IMAGE, 5, 8], [1, IMAGE, IMAGE, 5, 6, 9, 9]]

    split = split_prompts(rows, IMAGE)

    assert split.prefix == [1, IMAGE, IMAGE, 5]
    assert split.suffixes == [[6, 7], [8], [6, 9, 9]]
    # prefix + suffix is each prompt exactly: the answer logits are the full prompt's
    assert [split.prefix + suffix for suffix in split.suffixes] == rows


@pytest.mark.parametrize(
    "rows",
    [
        [[1, IMAGE, 5, 6]],  # one prompt
        [[1, IMAGE, 5, 6], [1, IMAGE, 5, 6]],  # identical prompts
        [[1, IMAGE, 5], [1, IMAGE, 5, 6, 7]],  # one prompt is a prefix of another
    ],
)
def test_every_suffix_keeps_at_least_its_last_token(rows):
    split = split_prompts(rows, IMAGE)

    assert all(len(suffix) >= 1 for suffix in split.suffixes)
    assert [split.prefix + suffix for suffix in split.suffixes] == rows


def test_prompts_that_differ_before_the_image_cannot_share_it():
    # A template that puts text before the image: the image would land in the suffixes
    assert split_prompts([[1, 2, IMAGE, 5], [1, 3, IMAGE, 5]], IMAGE) is None


def test_splitting_no_prompts_is_an_error():
    with pytest.raises(ValueError, match="no prompts"):
        split_prompts([], IMAGE)


def test_groups_keep_rows_times_the_longest_row_within_the_budget():
    lengths = [10, 50, 20, 40, 30]

    groups = group_by_budget(lengths, token_budget=100, max_rows=10)

    # sorted by length, so each group holds neighbours; every index exactly once
    assert sorted(i for group in groups for i in group) == list(range(5))
    for group in groups:
        assert len(group) * max(lengths[i] for i in group) <= 100
    assert groups == [[0, 2, 4], [3, 1]]


def test_groups_respect_the_row_cap_and_the_per_row_extra():
    assert group_by_budget([1] * 5, token_budget=1000, max_rows=2) == [[0, 1], [2, 3], [4]]
    # each row also holds 40 cached tokens: two rows of 1 + 40 fit in 100, three do not
    assert group_by_budget([1] * 3, token_budget=100, max_rows=10, extra=lambda _i: 40) == [[0, 1], [2]]


def test_a_row_longer_than_the_budget_still_gets_a_group_of_its_own():
    assert group_by_budget([500, 10], token_budget=100, max_rows=10) == [[1], [0]]


def test_only_a_long_run_of_tokens_before_the_image_is_a_head_worth_keeping():
    catalogue = list(range(1, MIN_CACHED_HEAD_TOKENS + 1))
    assert cacheable_head([*catalogue, IMAGE, IMAGE, 5], IMAGE) == tuple(catalogue)
    # a chat template's few opening tokens are computed with each prefix
    assert cacheable_head([*catalogue[:-1], IMAGE, IMAGE, 5], IMAGE) == ()
    assert cacheable_head([1, 2, 3], IMAGE) == ()  # no image: nothing to keep before it


def test_kept_heads_are_computed_once_each_and_bounded_least_recently_used_first():
    heads = HeadKV(max_entries=2)
    computed: list[tuple[int, ...]] = []

    def compute(head):
        # A cache with no layers stands in for the KV (its bytes are logged when it is computed).
        return lambda: computed.append(head) or SimpleNamespace(head=head, layers=[])

    assert heads.get((1,), compute((1,))).head == (1,)
    assert heads.get((1,), compute((1,))).head == (1,)  # a hit computes nothing
    heads.get((2,), compute((2,)))
    heads.get((1,), compute((1,)))  # (1,) is now the most recently used
    heads.get((3,), compute((3,)))  # over the bound: (2,) goes
    heads.get((1,), compute((1,)))
    heads.get((2,), compute((2,)))
    assert computed == [(1,), (2,), (3,), (2,)] and heads.computed == 4
