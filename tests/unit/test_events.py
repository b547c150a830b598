import json

import pytest

from moderation_worker.errors import ErrorCode, PermanentError
from moderation_worker.events import (
    Action,
    Decision,
    PolicyVerdict,
    best_effort_event_id,
    decide,
    parse_request,
)


def _verdict(triggered: bool, action: Action) -> PolicyVerdict:
    return PolicyVerdict(
        id="p",
        version=1,
        score=0.9,
        confidence=0.9,
        threshold=0.5,
        triggered=triggered,
        action=action,
        severity="high",
    )


def test_a_minimal_event_parses_and_unknown_fields_are_tolerated():
    request = parse_request(json.dumps({"event_id": "e1", "image_url": "s3://b/k", "brand_new": 1}).encode())
    assert request.event_id == "e1"
    assert request.metadata == {}
    assert request.policies is None


def test_metadata_and_optional_fields_survive_parsing():
    event = {
        "event_id": "e2",
        "image_url": "s3://b/k.jpg",
        "content_id": "c9",
        "tenant": "shop",
        "policies": ["weapons"],
        "submitted_at": "2026-11-21T10:00:00Z",
        "metadata": {"a": [1, 2]},
    }
    request = parse_request(json.dumps(event).encode())
    assert request.metadata == {"a": [1, 2]}
    assert request.submitted_at.year == 2026
    assert request.policies == ["weapons"]


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        (b"{not json", ErrorCode.INVALID_JSON, "not JSON"),
        (b"\xff\xfe\x00", ErrorCode.INVALID_JSON, "not UTF-8"),
        (None, ErrorCode.INVALID_JSON, "no value"),
        (b"[1, 2]", ErrorCode.INVALID_EVENT, "expected a JSON object"),
        (b'{"image_url": "s3://b/k"}', ErrorCode.INVALID_EVENT, "event_id: Field required"),
        (b'{"event_id": "", "image_url": "s3://b/k"}', ErrorCode.INVALID_EVENT, "event_id"),
        (b'{"event_id": "e", "image_url": 5}', ErrorCode.INVALID_EVENT, "image_url"),
        (
            b'{"event_id": "e", "image_url": "s3://b/k", "schema_version": 2}',
            ErrorCode.INVALID_EVENT,
            "schema_version 2",
        ),
        (
            b'{"event_id": "e", "image_url": "s3://b/k", "policies": "weapons"}',
            ErrorCode.INVALID_EVENT,
            "policies",
        ),
        (b'{"event_id": "e", "n": ' + b"9" * 5000 + b"}", ErrorCode.INVALID_JSON, "cannot be read as JSON"),
        (b"[" * 5000 + b"]" * 5000, ErrorCode.INVALID_JSON, "cannot be read as JSON"),
        (
            b'{"event_id": "e", "image_url": "s3://b/k", "metadata": {"x": "\\ud800"}}',
            ErrorCode.INVALID_EVENT,
            "cannot be echoed back as JSON",
        ),
        (
            b'{"event_id": "e", "image_url": "s3://b/k", "metadata": ' + b'{"a": ' * 300 + b"1" + b"}" * 301,
            ErrorCode.INVALID_JSON,
            "more than 64 deep",
        ),
        (  # deep enough for the serialiser's limit: the same code and message, not invalid_event
            b'{"event_id": "e", "image_url": "s3://b/k", "metadata": ' + b'{"a": ' * 900 + b"1" + b"}" * 901,
            ErrorCode.INVALID_JSON,
            "more than 64 deep",
        ),
        (  # deep enough for the parser's own recursion limit
            b'{"event_id": "e", "image_url": "s3://b/k", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            ErrorCode.INVALID_JSON,
            "cannot be read as JSON",
        ),
        (
            b'{"event_id": "a", "event_id": "b", "image_url": "s3://b/k"}',
            ErrorCode.INVALID_JSON,
            "has the key 'event_id' twice",
        ),
        (
            b'{"event_id": "e", "image_url": "s3://b/k", "metadata": {"a": 1, "a": 2}}',
            ErrorCode.INVALID_JSON,
            "has the key 'a' twice",
        ),
        (b'{"event_id": "e", "image_url": "   "}', ErrorCode.INVALID_EVENT, "image_url is blank"),
        (
            b'{"event_id": "e", "image_url": "s3://b/k", "metadata": {"blob": "' + b"x" * 70_000 + b'"}}',
            ErrorCode.INVALID_EVENT,
            "metadata is 70012 bytes",
        ),
    ],
)
def test_bad_records_raise_permanent_errors_that_say_what_is_wrong(value, code, fragment):
    with pytest.raises(PermanentError) as caught:
        parse_request(value)
    assert caught.value.code is code
    assert fragment in caught.value.message


def test_identifiers_and_metadata_stay_exactly_as_sent_and_only_names_are_trimmed():
    # Given an event whose identifiers carry whitespace and whose metadata keys differ only by it
    event = {
        "event_id": "  padded-id  ",
        "image_url": "  s3://b/k.jpg\n",
        "content_id": " c ",
        "tenant": "t\t",
        "source": " src",
        "policies": [" weapons ", "drugs"],
        "metadata": {" a": " 1 ", "a": 2, "nested": {" k ": [" v "]}},
    }
    request = parse_request(json.dumps(event).encode())

    # I expect the idempotency key and everything echoed back untouched; the URL and policy ids trimmed
    assert request.event_id == "  padded-id  "
    assert (request.content_id, request.tenant, request.source) == (" c ", "t\t", " src")
    assert request.metadata == event["metadata"]
    assert request.image_url == "s3://b/k.jpg" and request.policies == ["weapons", "drugs"]


def test_a_lone_surrogate_event_id_is_kept_printable_for_triage():
    assert best_effort_event_id(b'{"event_id": "a\\ud800b", "image_url": 1}') == "a\\ud800b"
    assert best_effort_event_id(b"{broken") is None
    assert best_effort_event_id(b"[" * 5000) is None


def test_the_strictest_triggered_action_decides():
    assert decide([]) is Decision.ALLOW
    assert decide([_verdict(False, Action.BLOCK)]) is Decision.ALLOW
    assert decide([_verdict(True, Action.REVIEW), _verdict(False, Action.BLOCK)]) is Decision.REVIEW
    assert decide([_verdict(True, Action.REVIEW), _verdict(True, Action.BLOCK)]) is Decision.BLOCK
