"""The ``moderation-worker`` console script.

Every setting is a ``MODERATION_*`` environment variable and, equally, a flag of the same name
(``--kafka-bootstrap-servers``); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from moderation_worker.config import ENV_PREFIX, Settings, unknown_variables
from moderation_worker.errors import ConfigurationError, StartupError
from moderation_worker.logging_setup import configure_logging
from moderation_worker.settings_flags import SettingsFlags

WORKER_FLAGS = SettingsFlags(Settings, ENV_PREFIX, title="settings")


def _settings_parent() -> argparse.ArgumentParser:
    """A parent parser with one flag per Settings field, so flags and env vars never drift apart."""
    return WORKER_FLAGS.parent()


def settings_markdown() -> str:
    """One row per setting: the environment variable, the flag, the default and what it does."""
    return WORKER_FLAGS.markdown(computed={"worker_id": "hostname-pid"})


def settings_from_args(args: argparse.Namespace) -> Settings:
    return WORKER_FLAGS.from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parent = _settings_parent()
    parser = argparse.ArgumentParser(
        prog="moderation-worker",
        description="Image content moderation: Kafka in, S3 fetch, VLM scoring, verdicts out.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[parent], help="consume, moderate and publish until stopped")
    run.add_argument(
        "--scorer",
        choices=["model", "fake"],
        default="model",
        help="'fake' scores by a stable hash instead of a model: dry runs and overhead tests; "
        "its verdicts say model id 'fake-scorer'",
    )

    check = commands.add_parser("check", parents=[parent], help="moderate one local file or s3:// URL")
    check.add_argument("image", help="a local path or s3://bucket/key")
    check.add_argument("--policies", help="comma-separated policy ids (default: the whole pack)")

    policies = commands.add_parser("policies", help="policy pack tools")
    policy_commands = policies.add_subparsers(dest="policies_command", required=True)
    validate = policy_commands.add_parser(
        "validate", parents=[parent], help="validate packs; exit 1 if any is invalid"
    )
    validate.add_argument("paths", nargs="*", help="pack files (default: the configured pack)")

    config = commands.add_parser(
        "config", parents=[parent], help="print the effective settings (secrets masked)"
    )
    config.add_argument("--markdown", action="store_true", help="the README's table of every setting")

    demo = commands.add_parser("demo", parents=[parent], help="the whole job on an embedded local stack")
    demo.add_argument("--keep-data", action="store_true", help="keep the stack's data folder")
    demo.add_argument(
        "--review", action="store_true", help="then keep the stack up with the review console, until Ctrl-C"
    )

    from moderation_worker.api.cli import add_parser as add_api_parser
    from moderation_worker.evaluation.cli import add_parser as add_eval_parser
    from moderation_worker.review.cli import add_parser as add_review_parser
    from moderation_worker.sample_feed import add_parser as add_samples_parser
    from moderation_worker.topics import add_parser as add_topics_parser

    add_review_parser(commands, parent)
    add_api_parser(commands, parent)
    add_topics_parser(commands, parent)
    add_samples_parser(commands, parent)
    add_eval_parser(commands, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValidationError, SettingsError) as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        # The demo prints a report; unless asked otherwise, keep its log to warnings, readable by eye.
        defaults = {"log_level": "WARNING", "log_format": "console"}
        settings = settings.model_copy(
            update={k: v for k, v in defaults.items() if k not in settings.model_fields_set}
        )
    configure_logging(settings.log_level, settings.log_format)
    _warn_about_unknown_variables()
    try:
        if args.command == "run":
            return _run(settings, fake=args.scorer == "fake")
        if args.command == "check":
            return _check(settings, args.image, args.policies)
        if args.command == "config":
            print(settings_markdown() if args.markdown else settings.model_dump_json(indent=2))
            return 0
        if args.command == "policies":
            return _validate_policies(args.paths or [str(settings.policy_pack_path())])
        if args.command == "demo":
            from moderation_worker.demo import run_demo

            return run_demo(settings, keep_data=args.keep_data, review=args.review)
        if args.command == "review":
            from moderation_worker.review.cli import run as run_review

            return run_review(args, settings)
        if args.command == "serve":
            from moderation_worker.api.cli import run as run_api

            return run_api(args, settings)
        if args.command == "topics":
            from moderation_worker.topics import run as run_topics

            return run_topics(settings, args)
        if args.command == "eval":
            from moderation_worker.evaluation.cli import run as run_eval

            return run_eval(settings, args)
        if args.command == "samples":
            from moderation_worker.sample_feed import run as run_samples

            return run_samples(settings, args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


def _warn_about_unknown_variables() -> None:
    import structlog

    from moderation_worker.api.cli import known_variables as api_variables
    from moderation_worker.review.cli import known_variables as review_variables

    log = structlog.get_logger("moderation_worker.cli")
    for name, closest in unknown_variables(os.environ, also_known=[*review_variables(), *api_variables()]):
        log.warning("unknown_setting_variable", variable=name, did_you_mean=closest, note="ignored")


def _run(settings: Settings, *, fake: bool) -> int:
    from moderation_worker.app import build_runtime
    from moderation_worker.model.fake import FakeScorer

    runtime = build_runtime(settings, scorer=FakeScorer() if fake else None)
    try:
        summary = runtime.run()
    except KeyboardInterrupt:
        print(
            "stopped by a second signal: the batch in hand was not committed; it will be redone",
            file=sys.stderr,
        )
        return 130
    print(
        json.dumps(
            {"results": summary.results, "dead_letters": summary.dead_letters, "retries": summary.retries}
        )
    )
    return 0


def _check(settings: Settings, image: str, policies: str | None) -> int:
    from moderation_worker.app import build_pipeline, load_scorer
    from moderation_worker.cache import BoundedLRUCache
    from moderation_worker.fetch import LocalFileFetcher, S3Fetcher, make_s3_client
    from moderation_worker.outcomes import InboundRecord, OutcomeKind
    from moderation_worker.policies import load_policy_pack
    from moderation_worker.specialists.stage import SpecialistStage

    pack = load_policy_pack(settings.policy_pack_path())  # before the model: a bad pack fails fast
    specialists = SpecialistStage.from_settings(pack, settings)
    s3 = S3Fetcher(client=make_s3_client(settings), max_bytes=settings.max_image_bytes)
    pipeline = build_pipeline(
        settings,
        scorer=load_scorer(settings),
        pack=pack,
        verdict_cache=BoundedLRUCache(0),
        fetcher=LocalFileFetcher(max_bytes=settings.max_image_bytes, s3=s3),
        specialists=specialists,
    )
    event = {"event_id": f"check-{uuid.uuid4()}", "image_url": image}
    if policies:
        event["policies"] = [p.strip() for p in policies.split(",") if p.strip()]
    record = InboundRecord(topic="cli", partition=0, offset=0, key=None, value=json.dumps(event).encode())
    try:
        (outcome,) = pipeline.process([record])
    finally:
        pipeline.close()
    if outcome.kind is OutcomeKind.RESULT:
        assert outcome.result is not None
        print(outcome.result.model_dump_json(indent=2))
        return 0
    print(
        json.dumps(
            {
                "event_id": event["event_id"],
                "outcome": outcome.kind.value,
                "code": outcome.error_code,
                "message": str(outcome.error),
            },
            indent=2,
        )
    )
    return 1


def _validate_policies(paths: list[str]) -> int:
    from moderation_worker.policies import load_policy_pack

    failed = 0
    for path in paths:
        try:
            pack = load_policy_pack(path)
        except ConfigurationError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"ok {path}: pack {pack.name!r} v{pack.version}, "
            f"{len(pack.policies)} policies, {pack.content_hash}"
        )
        for policy in pack.policies:
            print(
                f"   {policy.id:<24} v{policy.version} {policy.action.value:<6} {policy.severity:<8} "
                f"threshold {policy.threshold}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
