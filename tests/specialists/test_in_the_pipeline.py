"""The specialists through the production path: `moderation-worker check` (the tiny model, the
specialists pack) and the pipeline with its verdict cache."""

from __future__ import annotations

import json
import logging

import pytest

from moderation_worker import samples
from moderation_worker.app import build_pipeline
from moderation_worker.cache import BoundedLRUCache
from moderation_worker.cli import main
from moderation_worker.config import Settings
from moderation_worker.errors import ConfigurationError
from moderation_worker.fetch import LocalFileFetcher
from moderation_worker.model.fake import FakeScorer
from moderation_worker.outcomes import InboundRecord, OutcomeKind
from moderation_worker.pipeline import Pipeline
from moderation_worker.policies import load_policy_pack
from moderation_worker.specialists import base
from moderation_worker.specialists.stage import SpecialistStage

from .conftest import screenshot

PACK = "policies/specialists.yaml"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def card_screenshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("shots") / "checkout.png"
    screenshot(
        [
            ("Checkout", 32, (0, 0, 0)),
            (f"Card number {CARD}", 26, (0, 0, 0)),
            ("Total $42.00", 26, (0, 0, 0)),
        ],
        size=(1280, 400),
    ).save(path)
    return path


def _by_id(verdict: dict) -> dict[str, dict]:
    return {policy["id"]: policy for policy in verdict["policies"]}


def test_check_with_the_specialists_pack_flags_a_card_number_masked_everywhere(
    tiny_model_dir, card_screenshot, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    assert (
        main(["check", str(card_screenshot), "--model-id", str(tiny_model_dir), "--policy-pack", PACK]) == 0
    )
    out = capsys.readouterr()
    verdict = json.loads(out.out)
    personal = _by_id(verdict)["personal_data"]
    assert [s["source"] for s in personal["sources"]] == ["vlm", "ocr.personal_data"]
    ocr = personal["sources"][1]
    assert ocr["value"] == 1.0 and ocr["evidence"] == ["payment_card: **** **** **** 1111"]
    assert personal["confidence"] == 1.0 and personal["triggered"]  # max of the VLM's and the rule's
    assert verdict["decision"] in ("review", "block")
    sexual = _by_id(verdict)["sexual_content"]
    assert [s["source"] for s in sexual["sources"]] == ["vlm", "nudity.nudity"]
    assert sexual["sources"][1]["value"] < 0.2
    assert [s["source"] for s in _by_id(verdict)["weapons"]["sources"]] == ["vlm"]
    assert "specialists" in verdict["timings_ms"]
    everything = out.out + out.err + caplog.text
    assert CARD not in everything and CARD.replace(" ", "") not in everything


def _record(event: dict) -> InboundRecord:
    return InboundRecord(topic="t", partition=0, offset=0, key=None, value=json.dumps(event).encode())


def _pipeline(pack, cache, stage) -> Pipeline:
    settings = Settings(worker_id="test", health_port=None)
    return build_pipeline(
        settings, scorer=FakeScorer(), pack=pack, verdict_cache=cache,
        fetcher=LocalFileFetcher(max_bytes=settings.max_image_bytes), specialists=stage,
    )  # fmt: skip


def test_a_repeat_is_served_from_the_verdict_cache_with_its_signals_and_a_new_version_misses(card_screenshot):
    pack = load_policy_pack(PACK)
    stage = SpecialistStage.for_pack(pack)
    cache = BoundedLRUCache(16)
    pipeline = _pipeline(pack, cache, stage)
    event = {"event_id": "e1", "image_url": str(card_screenshot), "policies": ["personal_data"]}
    first, second = (pipeline.process([_record({**event, "event_id": n})])[0] for n in ("e1", "e2"))
    assert first.kind is second.kind is OutcomeKind.RESULT
    assert not first.result.cache.verdict and second.result.cache.verdict
    assert second.result.policies[0].sources == first.result.policies[0].sources
    assert "specialists" not in second.result.timings_ms  # nothing ran again

    # A new specialist version (a new list, a new model) is a new key: the same bytes are analysed again.
    stage.version += "-next"
    third = _pipeline(pack, cache, stage).process([_record({**event, "event_id": "e3"})])[0]
    assert not third.result.cache.verdict and "specialists" in third.result.timings_ms


def test_policies_without_signals_run_no_specialist(card_screenshot):
    pack = load_policy_pack(PACK)
    pipeline = _pipeline(pack, BoundedLRUCache(0), SpecialistStage.for_pack(pack))
    event = {"event_id": "e1", "image_url": str(card_screenshot), "policies": ["weapons", "drugs"]}
    (outcome,) = pipeline.process([_record(event)])
    assert "specialists" not in outcome.result.timings_ms
    assert all([s.source for s in p.sources] == ["vlm"] for p in outcome.result.policies)


def test_a_pack_whose_specialist_is_not_installed_stops_the_command_before_the_model(
    monkeypatch, tmp_path, capsys
):
    real_find_spec = base.importlib.util.find_spec
    monkeypatch.setattr(
        base.importlib.util, "find_spec", lambda name: None if name == "rapidocr" else real_find_spec(name)
    )
    photo = tmp_path / "p.png"
    photo.write_bytes(samples.sample_photos(("chelsea.png",))["chelsea.png"])
    # The model id names nothing: the error must come first, from the pack's needs.
    assert main(["check", str(photo), "--policy-pack", PACK, "--model-id", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "ocr specialist needs the 'rapidocr' package" in err and "[specialists]" in err


def test_a_pipeline_without_the_stage_its_pack_needs_is_refused():
    pack = load_policy_pack(PACK)
    with pytest.raises(ConfigurationError, match="ocr"):
        Pipeline(
            fetcher=LocalFileFetcher(max_bytes=1), scorer=FakeScorer(), pack=pack, limits=None,
            worker_id="w", verdict_cache=BoundedLRUCache(0), specialists=None,
        )  # fmt: skip
