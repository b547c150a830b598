"""Per policy and per source: precision, recall and F1 at the policy's threshold, ROC-AUC, PR-AUC and
expected calibration error (the numbers from :mod:`moderation_worker.quality`, as the console's label
pages compute them), a table to print, and the plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from moderation_worker import quality
from moderation_worker.evaluation.scoring import Observation
from moderation_worker.policies import PolicyPack

COMBINED = "combined"  # the verdict's confidence: the highest of the sources


@dataclass(frozen=True)
class SourceFigures:
    policy: str
    source: str
    examples: int
    positives: int
    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    roc_auc: float | None
    pr_auc: float | None
    ece: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def series(observations: Sequence[Observation], policy: str) -> dict[str, tuple[list[float], list[bool]]]:
    """(values, labels) per source of one policy, the combined confidence last. A source is measured on
    the examples it produced a value for (the VLM is not asked where a specialist decided alone)."""
    mine = [o for o in observations if o.policy == policy]
    names = list(dict.fromkeys(name for o in mine for name in o.sources))
    out = {}
    for name in names:
        having = [o for o in mine if name in o.sources]
        out[name] = ([o.sources[name] for o in having], [o.label for o in having])
    if len(names) > 1:
        out[COMBINED] = ([o.confidence for o in mine], [o.label for o in mine])
    return out


def figures(observations: Sequence[Observation], pack: PolicyPack) -> list[SourceFigures]:
    thresholds = {p.id: p.threshold for p in pack.policies}
    rows = []
    for policy in dict.fromkeys(o.policy for o in observations):
        for source, (values, labels) in series(observations, policy).items():
            at = quality.at_threshold(values, labels, thresholds[policy])
            rows.append(
                SourceFigures(
                    policy=policy,
                    source=source,
                    examples=len(values),
                    positives=sum(labels),
                    threshold=thresholds[policy],
                    precision=at.precision,
                    recall=at.recall,
                    f1=at.f1,
                    roc_auc=quality.roc_auc(values, labels),
                    pr_auc=quality.pr_auc(values, labels),
                    ece=quality.expected_calibration_error(values, labels),
                )
            )
    return rows


def render(rows: Sequence[SourceFigures]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = [
        "policy",
        "source",
        "n",
        "pos",
        "threshold",
        "precision",
        "recall",
        "F1",
        "ROC-AUC",
        "PR-AUC",
        "ECE",
    ]
    table = [header] + [
        [r.policy, r.source, str(r.examples), str(r.positives), f"{r.threshold:g}", cell(r.precision),
         cell(r.recall), cell(r.f1), cell(r.roc_auc), cell(r.pr_auc), cell(r.ece)]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def plot(observations: Sequence[Observation], pack: PolicyPack, folder: Path) -> list[Path]:
    """A reliability diagram and precision-recall curves per policy, one line per source: PNG files."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for policy in dict.fromkeys(o.policy for o in observations):
        sources = series(observations, policy)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        left.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
        for source, (values, labels) in sources.items():
            bins = [b for b in quality.reliability(values, labels) if b.count]
            left.plot(
                [b.mean_confidence for b in bins], [b.positive_rate for b in bins], marker="o", label=source
            )
            if any(labels) and not all(labels):
                precision, recall, _ = precision_recall_curve(labels, values)
                right.step(recall, precision, where="post", label=source)
        left.set(title=f"{policy}: reliability", xlabel="confidence", ylabel="share labelled positive",
                 xlim=(0, 1), ylim=(0, 1.02))  # fmt: skip
        right.set(title=f"{policy}: precision and recall", xlabel="recall", ylabel="precision",
                  xlim=(0, 1.02), ylim=(0, 1.02))  # fmt: skip
        for axis in (left, right):
            axis.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path = folder / f"{policy}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
