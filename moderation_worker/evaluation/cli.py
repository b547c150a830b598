"""``moderation-worker eval LABELS``: score a labelled set through the real pipeline and report how good
the verdicts are, per policy and source; ``--fit`` proposes a calibrated pack beside the current one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moderation_worker.config import Settings
from moderation_worker.errors import ConfigurationError


def add_parser(commands, worker_settings: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "eval", parents=[worker_settings], help="verdict quality on labelled images, per policy and source"
    )
    parser.add_argument(
        "labels", help="a labels JSONL (or the console's export-labels), or POLICY/positive|negative/"
    )
    parser.add_argument(
        "--plots", type=Path, help="write a reliability diagram and PR curves per policy here"
    )
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--fit", action="store_true", help="fit calibration and thresholds; write a new pack")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=float, help="with --fit: the precision to reach")
    target.add_argument("--target-recall", type=float, help="with --fit: the recall to reach")
    parser.add_argument("--scorer", choices=["model", "fake"], default="model", help="'fake': a stable hash")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from moderation_worker.app import build_pipeline, load_scorer
    from moderation_worker.cache import BoundedLRUCache
    from moderation_worker.evaluation import fitting, report
    from moderation_worker.evaluation.labels import read_labels
    from moderation_worker.evaluation.scoring import score_examples
    from moderation_worker.fetch import LocalFileFetcher, S3Fetcher, make_s3_client
    from moderation_worker.model.fake import FakeScorer
    from moderation_worker.policies import load_policy_pack
    from moderation_worker.specialists.stage import SpecialistStage

    pack_path = settings.policy_pack_path()
    pack = load_policy_pack(pack_path)
    examples = read_labels(args.labels)
    unknown = sorted({e.policy for e in examples} - {p.id for p in pack.policies})
    if unknown:
        raise ConfigurationError(f"{args.labels}: policies {unknown} are not in pack {pack.name!r}")
    specialists = SpecialistStage.from_settings(pack, settings)
    s3 = S3Fetcher(client=make_s3_client(settings), max_bytes=settings.max_image_bytes)
    pipeline = build_pipeline(
        settings,
        scorer=FakeScorer() if args.scorer == "fake" else load_scorer(settings),
        pack=pack,
        verdict_cache=BoundedLRUCache(0),
        fetcher=LocalFileFetcher(max_bytes=settings.max_image_bytes, s3=s3),
        specialists=specialists,
    )
    try:
        scored = score_examples(
            pipeline, examples, batch_size=settings.batch_size,
            progress=lambda done, total: print(f"scored {done}/{total} images", file=sys.stderr),
        )  # fmt: skip
    finally:
        pipeline.close()
    rows = report.figures(scored.observations, pack)
    print(f"pack {pack.name!r} v{pack.version}, {len(examples)} labels on {len(scored.observations)} scored")
    print(report.render(rows))
    for image, code in scored.failed:
        print(f"not scored ({code}): {image}")
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    if args.plots:
        for path in report.plot(scored.observations, pack, args.plots):
            print(f"wrote {path}")
    if args.fit:
        fitted, changes = fitting.fit_pack(
            scored.observations,
            pack,
            target_precision=args.target_precision,
            target_recall=args.target_recall,
        )
        print(fitting.describe(changes))
        print(f"wrote {fitting.write_beside(fitted, pack_path)} (the current pack is unchanged)")
    return 0
