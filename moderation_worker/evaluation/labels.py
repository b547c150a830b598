"""Labelled examples from the three shapes people have them in.

- A JSONL file, one object per line: the image (``image`` or ``image_url``: a local path, relative to
  the file, or an ``s3://`` URL), ``policy`` and ``label`` (true when the policy applies). The review
  console's ``review export-labels`` writes exactly this (with more fields, ignored).
- A folder of folders: ``POLICY/positive/*`` and ``POLICY/negative/*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from moderation_worker.errors import ConfigurationError

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True, slots=True)
class Example:
    image: str  # a local path or an s3:// URL
    policy: str
    label: bool


def read_labels(source: str | Path) -> list[Example]:
    path = Path(source)
    if path.is_dir():
        return _from_folders(path)
    if path.is_file():
        return _from_jsonl(path)
    raise ConfigurationError(f"{path}: no such labels file or folder")


def _from_folders(root: Path) -> list[Example]:
    examples = []
    for policy_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for kind, label in (("positive", True), ("negative", False)):
            for image in sorted((policy_dir / kind).glob("*")):
                if image.suffix.lower() in _IMAGE_SUFFIXES:
                    examples.append(Example(str(image.resolve()), policy_dir.name, label))
    if not examples:
        raise ConfigurationError(f"{root}: no images under POLICY/positive/ or POLICY/negative/")
    return examples


def _from_jsonl(path: Path) -> list[Example]:
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image = row.get("image") or row["image_url"]
            policy, label = row["policy"], row["label"]
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise ConfigurationError(
                f"{path}:{number}: expected a JSON object with image (or image_url), policy and label"
            ) from exc
        if not isinstance(label, bool) or not isinstance(policy, str) or not isinstance(image, str):
            raise ConfigurationError(
                f"{path}:{number}: label must be true or false, policy and image strings"
            )
        if "://" not in image:
            image = str((path.parent / image).resolve())
        examples.append(Example(image, policy, label))
    if not examples:
        raise ConfigurationError(f"{path}: no labelled examples")
    return examples
