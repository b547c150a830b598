"""What a section hands back, the machine it ran on, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.timing import Figure, Ratio, Target

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        for row in self.rows:
            # Text left, numbers right.
            cells = [
                cell.rjust(w) if _numeric(cell) else cell.ljust(w)
                for cell, w in zip(row, widths, strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell.removesuffix("x").removesuffix("%"))
    except ValueError:
        return cell == "-"
    return True


@dataclass
class SectionResult:
    number: int
    name: str
    title: str
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: dict[str, Ratio] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    skipped: str | None = None

    def add_target(
        self, name: str, source: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> None:
        """A goal from the issue, checked against this section's ratio ``source`` (or figure's median)."""
        value = self.ratios[source].value if source in self.ratios else self.figures[source].median
        self.targets.append(Target(name, source, value, minimum=minimum, maximum=maximum))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "title": self.title}
        if self.skipped is not None:
            body["skipped"] = self.skipped
        body["info"] = self.info
        body["figures"] = {key: figure.to_json() for key, figure in self.figures.items()}
        body["ratios"] = {key: r.to_json() for key, r in self.ratios.items()}
        body["targets"] = [t.to_json() for t in self.targets]
        return body

    def render(self) -> str:
        lines = [f"== {self.number}. {self.title}"]
        if self.skipped is not None:
            lines.append(f"   skipped: {self.skipped}")
        for caption, table in self.tables:
            if caption:
                lines.append(caption)
            lines.append(table.render())
            lines.append("")
        for target in self.targets:
            state = "met" if target.met else "MISSED"
            lines.append(f"target  {target.name}: {fmt(target.value)} (wanted {target.wanted})  {state}")
        return "\n".join(lines).rstrip() + "\n"


def fmt(value: float | None) -> str:
    """A number with three or so significant figures, no exponent for everyday magnitudes."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def machine() -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    import torch
    import transformers

    description: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpu_names": (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    description.update(_git())
    return description


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    # Tracked code only: the report being written (benchmarks/results/) must not count.
    status = git(
        "status", "--porcelain", "--untracked-files=no", "--", "moderation_worker", "benchmarks", "policies"
    )
    return {"git_commit": commit, "git_tree_modified": bool(status) if status is not None else None}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)


def command_line() -> str:
    return " ".join(["python", "-m", "benchmarks", *sys.argv[1:]])
