"""The event contract: what comes in, what goes out. Documented with examples in the README.

- ``ModerationRequest``: one uploaded image to moderate (input topic).
- ``ModerationResult``: the verdict for one request (results topic, and review topic when flagged).
- Dead letters keep the original record untouched; see ``moderation_worker.publish``.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticSerializationError

from moderation_worker.errors import ErrorCode, PermanentError

REQUEST_SCHEMA_VERSION = 1
RESULT_SCHEMA_VERSION = 1


class Decision(StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


class Action(StrEnum):
    REVIEW = "review"
    BLOCK = "block"


class ModerationRequest(BaseModel):
    """An upload service's request to moderate one image. Unknown fields are tolerated (ignored).

    Strings stay exactly as sent: ``event_id`` is the idempotency key and ``content_id``, ``tenant``,
    ``source`` and ``metadata`` are echoed back, so trimming them would change what downstream keys
    on. Only ``image_url`` and the policy ids, which name things rather than being echoed, are
    trimmed of surrounding whitespace.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(min_length=1, max_length=256, description="Unique; the idempotency key.")
    image_url: str = Field(min_length=1, max_length=2048, description="s3://bucket/key")
    content_id: str | None = Field(None, max_length=256)
    tenant: str | None = Field(None, max_length=256)
    source: str | None = Field(None, max_length=256)
    policies: list[str] | None = Field(None, description="A subset of the pack's policy ids.")
    submitted_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="Echoed back untouched.")
    schema_version: int = REQUEST_SCHEMA_VERSION

    @field_validator("image_url", mode="after")
    @classmethod
    def _trim_url(cls, value: str) -> str:
        trimmed = value.strip()
        if not trimmed:
            raise ValueError("image_url is blank")
        return trimmed

    @field_validator("policies", mode="after")
    @classmethod
    def _trim_policy_ids(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [policy.strip() for policy in value]


class ImageInfo(BaseModel):
    url: str
    sha256: str
    width: int
    height: int
    format: str
    byte_size: int


class SourceValue(BaseModel):
    """One source of a policy's confidence: ``vlm`` (the calibrated score) or ``specialist.signal``."""

    source: str
    value: float
    evidence: list[str] = Field(default_factory=list, description="What it saw, masked.")


class HashMatchInfo(BaseModel):
    """A known-bad list entry an image matched (PDQ, within the configured Hamming distance)."""

    list: str
    list_version: str
    label: str
    source: str
    policy: str
    distance: int


class PolicyVerdict(BaseModel):
    id: str
    version: int
    score: float | None = Field(
        description="The model's probability of 'Yes', renormalised over Yes/No; null when the model "
        "did not run for this image (skipped_by says why)."
    )
    confidence: float | None = Field(
        description="The score after the policy's calibration, or the highest of its sources; "
        "compared to threshold. Null when the policy was not scored."
    )
    sources: list[SourceValue] = Field(
        default_factory=list, description="Every source of the confidence with its value (vlm first)."
    )
    threshold: float
    triggered: bool
    skipped_by: str | None = Field(
        None, description="Why the policy was not scored: hash_match (the image is on a known-bad list)."
    )
    action: Action
    severity: str


class PolicyPackInfo(BaseModel):
    name: str
    version: str
    hash: str


class ModelDescription(BaseModel):
    id: str
    revision: str
    dtype: str
    device: str
    strategy: str = Field(description="How the scores were computed: shared_prefix, reused_features, plain.")


class CacheHits(BaseModel):
    verdict: bool
    feature: bool


class WorkerInfo(BaseModel):
    id: str
    version: str


class ModerationResult(BaseModel):
    """The verdict for one request. Published keyed like the input record."""

    schema_version: int = RESULT_SCHEMA_VERSION
    event_id: str
    content_id: str | None
    tenant: str | None
    source: str | None
    submitted_at: datetime | None
    metadata: dict[str, Any]
    decision: Decision
    image: ImageInfo
    matched: HashMatchInfo | None = Field(
        None, description="The known-bad list entry the image matched; the model was skipped."
    )
    policies: list[PolicyVerdict]
    policy_pack: PolicyPackInfo
    model: ModelDescription
    cache: CacheHits
    timings_ms: dict[str, float]
    worker: WorkerInfo
    processed_at: datetime

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def decide(verdicts: list[PolicyVerdict]) -> Decision:
    """Block beats review beats allow: the strictest triggered action wins."""
    actions = {v.action for v in verdicts if v.triggered}
    if Action.BLOCK in actions:
        return Decision.BLOCK
    if Action.REVIEW in actions:
        return Decision.REVIEW
    return Decision.ALLOW


def parse_request(value: bytes | None) -> ModerationRequest:
    """Parse a record value, or raise PermanentError(invalid_json | invalid_event) saying what is wrong."""
    return validate_request(read_document(value))


def read_document(value: bytes | None, *, what: str = "record value") -> object:
    """A record value (or an HTTP body) as JSON, or PermanentError(invalid_json) saying what is wrong:
    not UTF-8, not JSON, a key twice, nested too deep."""
    if value is None:
        raise PermanentError(
            ErrorCode.INVALID_JSON, "record has no value (a tombstone?); expected a JSON object"
        )
    try:
        document = json.loads(value, object_pairs_hook=_object_without_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise PermanentError(ErrorCode.INVALID_JSON, f"{what} is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise PermanentError(
            ErrorCode.INVALID_JSON,
            f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from exc
    except _DuplicateKeyError as exc:
        raise PermanentError(ErrorCode.INVALID_JSON, str(exc)) from exc
    except (ValueError, RecursionError) as exc:  # numbers too long to convert, nesting too deep
        raise PermanentError(ErrorCode.INVALID_JSON, f"{what} cannot be read as JSON: {exc}") from exc
    if _nesting_depth(document) > MAX_JSON_DEPTH:
        raise PermanentError(
            ErrorCode.INVALID_JSON,
            f"{what} nests objects and arrays more than {MAX_JSON_DEPTH} deep (the limit)",
        )
    return document


def validate_request(document: object) -> ModerationRequest:
    """A JSON document as a request, or PermanentError(invalid_event) naming the field."""
    if not isinstance(document, dict):
        raise PermanentError(
            ErrorCode.INVALID_EVENT, f"expected a JSON object, got {type(document).__name__}"
        )
    try:
        request = ModerationRequest.model_validate(document)
    except ValidationError as exc:
        raise PermanentError(ErrorCode.INVALID_EVENT, _summarise(exc)) from exc
    _check_echoable(request)
    if request.schema_version != REQUEST_SCHEMA_VERSION:
        raise PermanentError(
            ErrorCode.INVALID_EVENT,
            f"schema_version {request.schema_version} is not supported; "
            f"this worker reads {REQUEST_SCHEMA_VERSION}",
        )
    return request


MAX_METADATA_BYTES = 64 * 1024
# Deeper documents are refused as invalid_json whatever their depth (the parser's own recursion limit
# would otherwise decide, at about a thousand, and the serialiser's at a few hundred: two codes for one
# fault). Real metadata is a few levels deep.
MAX_JSON_DEPTH = 64


class _DuplicateKeyError(ValueError):
    pass


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a key given twice is refused, never silently the last one.

    Otherwise ``{"event_id": "a", "event_id": "b"}`` means different events to different parsers, and
    metadata would not be echoed back as sent.
    """
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKeyError(f"record value has the key {duplicate[:100]!r} twice in one object")
    return document


def _nesting_depth(document: Any) -> int:
    """How deep objects and arrays nest (a scalar is 0); iterative, so no depth can overflow it."""
    deepest, pending = 0, [(document, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # past the limit the answer is known: stop walking
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _check_echoable(request: ModerationRequest) -> None:
    """Refuse what the result could not carry back: metadata too large for a Kafka record, or text
    that cannot be written as JSON (lone surrogates), so that publishing a verdict never fails."""
    try:
        metadata = json.dumps(request.metadata, ensure_ascii=False).encode()
        request.model_dump_json()
    except (ValueError, TypeError, RecursionError, UnicodeError, PydanticSerializationError) as exc:
        raise PermanentError(
            ErrorCode.INVALID_EVENT, f"the event cannot be echoed back as JSON: {exc}"
        ) from exc
    if len(metadata) > MAX_METADATA_BYTES:
        raise PermanentError(
            ErrorCode.INVALID_EVENT,
            f"metadata is {len(metadata)} bytes as JSON; the limit is {MAX_METADATA_BYTES} "
            "(it is echoed in every verdict)",
        )


def best_effort_event_id(value: bytes | None) -> str | None:
    """The event_id of a record that failed validation, when it has a usable one: helps triage."""
    try:
        document = json.loads(value) if value is not None else None
    except (ValueError, RecursionError):
        return None
    event_id = document.get("event_id") if isinstance(document, dict) else None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 256:
        return None
    return event_id.encode("utf-8", "backslashreplace").decode()  # lone surrogates made printable


def _summarise(exc: ValidationError) -> str:
    """'event_id: Field required; policies.0: Input should be a valid string' — short and actionable."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
