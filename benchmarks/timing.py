"""Figures: medians of repeated, interleaved measurements, with their raw samples, and ratios between them.

Every variant of one comparison is measured inside the same repeat, one after the other, with the order
rotated from repeat to repeat, so that drift (another process, thermal or frequency changes) hits every
variant alike and no variant always runs first. Warm-up runs come before and are never part of a figure.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr, with the seconds since the suite started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Figure:
    """One measured quantity: its samples (warm-up excluded) and their median."""

    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    higher_is_better: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "unit": self.unit,
            "n": len(self.samples),
            "min": min(self.samples),
            "max": max(self.samples),
            "samples": list(self.samples),
            "better": "higher" if self.higher_is_better else "lower",
            **({"note": self.note} if self.note else {}),
        }


# A variant either is timed from outside (returns None) or reports its own figure (returns a number:
# seconds, or whatever unit its figure has), for measurements whose timed part is not the whole call.
Variant = Callable[[], float | None]


def interleaved(
    variants: Mapping[str, Variant],
    *,
    repeats: int,
    warmup: int,
    scale: float = 1000.0,
    unit: str = "ms",
) -> dict[str, Figure]:
    """Run every variant once per repeat, in an order rotated each repeat; one Figure per variant.

    Self-timed variants' numbers are multiplied by ``scale`` like the outside timings (seconds to ms by
    default); pass ``scale=1`` for variants that report a rate.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    figures = {name: Figure(unit) for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            reported = variants[name]()
            elapsed = time.perf_counter() - started
            figures[name].samples.append((elapsed if reported is None else reported) * scale)
    return figures


@dataclass
class Ratio:
    """numerator / denominator of two figures from the same run, with the same ratio repeat by repeat."""

    numerator: str
    denominator: str
    value: float
    per_repeat: list[float]

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "of": [self.numerator, self.denominator],
            "computed_as": "median(numerator) / median(denominator)",
            "per_repeat": self.per_repeat,
        }


def ratio(figures: Mapping[str, Figure], numerator: str, denominator: str) -> Ratio:
    top, bottom = figures[numerator], figures[denominator]
    paired = [a / b for a, b in zip(top.samples, bottom.samples, strict=False) if b]
    return Ratio(numerator, denominator, top.median / bottom.median, paired)


@dataclass
class Target:
    """A goal from the issue, checked against a ratio: met when value >= minimum (or <= maximum)."""

    name: str
    source: str  # the key of the ratio (or figure) in the section that gives the value
    value: float
    minimum: float | None = None
    maximum: float | None = None

    @property
    def met(self) -> bool:
        if self.minimum is not None and self.value < self.minimum:
            return False
        return not (self.maximum is not None and self.value > self.maximum)

    @property
    def wanted(self) -> str:
        return f">= {self.minimum:g}" if self.minimum is not None else f"<= {self.maximum:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "value": self.value,
            "wanted": self.wanted,
            "met": self.met,
        }


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of the samples."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
