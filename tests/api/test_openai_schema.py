"""The OpenAI-shaped answer of a verdict whose policies were not all scored (a known-bad image)."""

from __future__ import annotations

from moderation_worker.api.openai_schema import response
from moderation_worker.events import Decision, HashMatchInfo
from moderation_worker.policies import OPENAI_CATEGORIES
from moderation_worker.verdicts import hash_matched_verdicts
from tests.review.factories import PACK, verdict


def test_unscored_policies_are_zero_and_unflagged_and_the_match_flags_its_category():
    matched = HashMatchInfo(list="known.csv", list_version="v1", label="known-bad", source="t",
                            policy="graphic_violence", distance=9)  # fmt: skip
    result = verdict("e1").model_copy(
        update={"policies": hash_matched_verdicts(PACK.policies, matched), "matched": matched,
                "decision": Decision.BLOCK}
    )  # fmt: skip
    (answer,) = response(result, PACK, model="m")["results"]
    assert answer["flagged"] is True
    assert set(OPENAI_CATEGORIES) <= set(answer["category_scores"])
    assert (
        answer["categories"]["violence/graphic"] is True
        and answer["category_scores"]["violence/graphic"] == 1.0
    )
    assert answer["category_scores"]["sexual"] == 0.0 and answer["categories"]["sexual"] is False
    assert all(isinstance(v, float) for v in answer["category_scores"].values())
    assert answer["moderation_worker"]["matched"]["label"] == "known-bad"
