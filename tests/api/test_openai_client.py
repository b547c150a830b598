"""The official openai package against our /v1/moderations, on loopback, with the tiny model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI

from moderation_worker import samples
from moderation_worker.policies import OPENAI_CATEGORIES
from tests.api.conftest import data_url

pytestmark = [pytest.mark.integration]


@pytest.fixture
def tiny_scorer(tiny_model_dir):
    from moderation_worker.model.hf import HFScorer

    return HFScorer.from_pretrained(str(tiny_model_dir), local_files_only=True)


def test_the_openai_client_moderates_an_image_and_parses_our_answer(serve_api, tiny_scorer):
    served = serve_api(scorer=tiny_scorer)
    client = OpenAI(base_url=served.url + "/v1", api_key="unused-on-loopback", max_retries=0)
    photo = samples.sample_photos(("coffee.png",))["coffee.png"]

    raw_response = client.moderations.with_raw_response.create(
        model="omni-moderation-latest",
        input=[
            {"type": "image_url", "image_url": {"url": data_url(photo)}},
            {"type": "text", "text": "a cup of coffee"},  # accepted, not scored
        ],
    )
    response = raw_response.parse()

    [result] = response.results
    assert response.model == "omni-moderation-latest" and response.id.startswith("modr-")
    # the typed fields OpenAI's clients read are there: all 13 categories, booleans and scores
    assert isinstance(result.flagged, bool)
    assert isinstance(result.categories.sexual, bool) and isinstance(result.categories.violence_graphic, bool)
    assert 0.0 <= result.category_scores.sexual <= 1.0
    assert result.category_applied_input_types.sexual == ["image"]
    # (the JSON itself: a typed client folds our policy id self_harm into its own self-harm field)
    raw = raw_response.http_response.json()["results"][0]
    assert set(OPENAI_CATEGORIES) <= set(raw["categories"])
    # our policies as categories too, and the whole verdict alongside
    ours = raw["moderation_worker"]
    assert result.flagged == (ours["decision"] != "allow")
    for verdict in ours["policies"]:
        assert raw["categories"][verdict["id"]] == verdict["triggered"]
        assert raw["category_scores"][verdict["id"]] == pytest.approx(verdict["confidence"])
    assert ours["model"]["strategy"] == "shared_prefix" and ours["image"]["width"] == 600  # coffee.png


def test_a_batch_of_inputs_from_concurrent_clients_each_gets_its_own_answer(serve_api, tiny_scorer):
    served = serve_api(scorer=tiny_scorer, max_wait_ms=50)
    client = OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0)
    photos = samples.sample_photos(("astronaut.png", "camera.png", "chelsea.png", "coffee.png"))

    def moderate(name: str):
        body = client.moderations.create(
            input=[{"type": "image_url", "image_url": {"url": data_url(photos[name])}}]
        )
        return name, body.results[0].model_dump(by_alias=True)["moderation_worker"]

    with ThreadPoolExecutor(len(photos)) as pool:
        answers = dict(pool.map(moderate, photos))

    assert {name: answer["image"]["sha256"] for name, answer in answers.items()} == {
        name: __import__("hashlib").sha256(data).hexdigest() for name, data in photos.items()
    }
