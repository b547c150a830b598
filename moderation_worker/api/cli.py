"""``moderation-worker serve``: the HTTP API and its page. Settings are ``MODERATION_API_*`` variables or
the flags ``--api-*`` of the same name; the model, the pack, S3 and the caches are the worker's."""

from __future__ import annotations

import argparse

from moderation_worker.api.settings import API_ENV_PREFIX, ApiSettings
from moderation_worker.config import Settings
from moderation_worker.settings_flags import SettingsFlags

API_FLAGS = SettingsFlags(
    ApiSettings, API_ENV_PREFIX, flag_prefix="api-", dest_prefix="api", title="API settings"
)


def settings_parent() -> argparse.ArgumentParser:
    return API_FLAGS.parent()


def api_settings(args: argparse.Namespace) -> ApiSettings:
    return API_FLAGS.from_args(args)


def known_variables() -> list[str]:
    return API_FLAGS.variables()


def settings_markdown() -> str:
    """The README's table of the API's settings, generated from the settings class."""
    return API_FLAGS.markdown()


def add_parser(commands, worker_settings: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve", parents=[worker_settings, settings_parent()], help="the synchronous HTTP API and its page"
    )
    serve.add_argument(
        "--scorer",
        choices=["model", "fake"],
        default="model",
        help="'fake': a stable hash instead of a model",
    )
    serve.add_argument(
        "--new-key", metavar="NAME", help="print a new API key and its settings entry, then exit"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.new_key:
        from moderation_worker.api.keys import new_key

        key, entry = new_key(args.new_key)
        print(f"key (give it to the client, once):  {key}")
        print(f"entry (add it to {API_ENV_PREFIX}KEYS):  {entry}")
        return 0
    from moderation_worker.api.service import serve
    from moderation_worker.model.fake import FakeScorer

    return serve(settings, api_settings(args), scorer=FakeScorer() if args.scorer == "fake" else None)
