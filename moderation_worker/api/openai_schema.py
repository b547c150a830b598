"""OpenAI's moderation endpoint, for images: the request parsed, our verdict answered in its shape.

OpenAI's schema: one list of parts (``{"type": "image_url", "image_url": {"url": ...}}`` and
``{"type": "text", "text": ...}``) is one input and gets one result. Ours scores images: exactly one
image part is required (none, or more than one, is a 400 with a code); text parts are accepted and
not scored, so ``category_applied_input_types`` says ``["image"]``.

Categories are our policy ids. When the pack maps policies to OpenAI's categories
(``openai_category``), all 13 of OpenAI's keys are present as well, false and 0 where no policy maps
to one (a category several policies map to takes the highest confidence), so typed clients never
miss a key. Scores are our calibrated confidences; ``flagged`` is our decision not being ``allow``;
the whole verdict rides along under ``moderation_worker``.
"""

from __future__ import annotations

import uuid
from typing import Any

from moderation_worker.api.errors import ApiError
from moderation_worker.events import Decision, ModerationResult
from moderation_worker.policies import OPENAI_CATEGORIES, PolicyPack


def image_url_of(body: Any) -> str:
    """The one image URL of an OpenAI moderation request body, or ApiError saying what is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object with an input")
    parts = body.get("input")
    if isinstance(parts, str) or (isinstance(parts, list) and all(isinstance(p, str) for p in parts)):
        raise ApiError(400, "no_image", "this server scores images: send an input with one image_url part",
                       param="input")  # fmt: skip
    if not isinstance(parts, list) or not parts:
        raise ApiError(400, "invalid_request", "input must be a list of parts", param="input")
    urls = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type") not in ("image_url", "text"):
            raise ApiError(
                400, "invalid_request", "each part is {type: image_url | text, ...}", param="input"
            )
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url:
                raise ApiError(400, "invalid_request", "an image_url part needs image_url.url", param="input")
            urls.append(url)
    if not urls:
        raise ApiError(400, "no_image", "the input has no image_url part", param="input")
    if len(urls) > 1:
        raise ApiError(
            400, "too_many_images", f"one image per input, this one has {len(urls)}", param="input"
        )
    return urls[0]


def response(result: ModerationResult, pack: PolicyPack, *, model: str) -> dict[str, Any]:
    verdicts = {p.id: p for p in result.policies}
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    mapped = {p.id: p.openai_category for p in pack.policies if p.openai_category}
    if mapped:
        for name in OPENAI_CATEGORIES:
            members = [
                verdicts[pid] for pid, category in mapped.items() if category == name and pid in verdicts
            ]
            categories[name] = any(v.triggered for v in members)
            # An unscored policy (skipped_by: the model did not run) counts as 0: typed clients
            # need a number for every key.
            scores[name] = max((v.confidence or 0.0 for v in members), default=0.0)
            applied[name] = ["image"] if members else []
    for policy_id, verdict in verdicts.items():
        categories[policy_id] = verdict.triggered
        scores[policy_id] = verdict.confidence or 0.0
        applied[policy_id] = ["image"]
    return {
        "id": f"modr-{uuid.uuid4().hex}",
        "model": model,
        "results": [
            {
                "flagged": result.decision is not Decision.ALLOW,
                "categories": categories,
                "category_scores": scores,
                "category_applied_input_types": applied,
                "moderation_worker": result.model_dump(mode="json"),
            }
        ],
    }
