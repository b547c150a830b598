"""``moderation-worker serve``: the HTTP API and its page. Settings are ``MODERATION_API_*`` variables or
the flags ``--api-*`` of the same name; the model, the pack, S3 and the caches are the worker's."""

from __future__ import annotations

import argparse

from moderation_worker.api.settings import API_ENV_PREFIX, ApiSettings
from moderation_worker.config import Settings

_NONE_WORDS = {"none", "null"}


def settings_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(f"API settings (each also {API_ENV_PREFIX}<NAME>)")
    for name, field in ApiSettings.model_fields.items():
        group.add_argument(
            "--api-" + name.replace("_", "-"),
            dest="api__" + name,
            default=argparse.SUPPRESS,
            metavar=name.upper(),
            help=field.description,
        )
    return parent


def api_settings(args: argparse.Namespace) -> ApiSettings:
    overrides = {
        key.removeprefix("api__"): None if value.lower() in _NONE_WORDS else value
        for key, value in vars(args).items()
        if key.startswith("api__")
    }
    return ApiSettings(**overrides)


def known_variables() -> list[str]:
    return [API_ENV_PREFIX + name.upper() for name in ApiSettings.model_fields]


def settings_markdown() -> str:
    rows = ["| Environment variable | Flag | Default | Description |", "|---|---|---|---|"]
    for name, field in ApiSettings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            shown = ",".join(default) or "(none)"
        else:
            shown = "unset" if default is None else str(default)
        description = (field.description or "").replace("|", "\\|")
        variable, flag = API_ENV_PREFIX + name.upper(), "--api-" + name.replace("_", "-")
        rows.append(f"| `{variable}` | `{flag}` | `{shown}` | {description} |")
    return "\n".join(rows)


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
