"""What every specialist is and gives: named signals in [0, 1], each with masked evidence."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from moderation_worker.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Signal:
    """One specialist's evidence for one question: ``value`` in [0, 1]; ``evidence`` is what it saw,
    already masked (never a full card number), for verdicts, logs and pages."""

    name: str
    value: float
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one specialist made of one image."""

    specialist: str
    signals: tuple[Signal, ...] = ()
    elapsed_ms: float = 0.0
    details: dict[str, object] = field(default_factory=dict)

    def signal(self, name: str) -> Signal | None:
        return next((s for s in self.signals if s.name == name), None)


class Specialist(Protocol):
    name: str
    version: str  # part of the verdict-cache key: a new model or list never serves old verdicts

    def analyse(self, image: Image.Image) -> Analysis: ...


class SpecialistUnavailable(ConfigurationError):
    """A specialist the configuration needs is not installed: the worker must not start without it."""


def require(module: str, specialist: str) -> None:
    """SpecialistUnavailable naming the extra to install, when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise SpecialistUnavailable(
            f"the {specialist} specialist needs the {module!r} package: "
            "pip install 'moderation-worker[specialists]'"
        )


def rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB (alpha composited on white, as a viewer would show it)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
