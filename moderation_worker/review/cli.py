"""``moderation-worker review ...``: the console's processes and its admin commands.

    moderation-worker review                      ingester + web console + outbox, one process
    moderation-worker review ingest | web         one part alone, for scale-out
    moderation-worker review migrate              bring the database schema up to date
    moderation-worker review users add NAME --role moderator|lead|admin [--password-stdin | --no-password]
    moderation-worker review users disable NAME | enable NAME | list
    moderation-worker review export-labels [--out FILE]    the labels, JSONL
    moderation-worker review export-audit [--out FILE]     the audit log, JSONL

Console settings are ``MODERATION_REVIEW_*`` variables, or the flags ``--review-*`` of the same name.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from collections.abc import Iterable

from moderation_worker.config import Settings
from moderation_worker.review.settings import REVIEW_ENV_PREFIX, ReviewSettings
from moderation_worker.settings_flags import SettingsFlags

# Prefixed: the worker's flags share these parsers.
REVIEW_FLAGS = SettingsFlags(
    ReviewSettings, REVIEW_ENV_PREFIX, flag_prefix="review-", dest_prefix="review", title="console settings"
)


def settings_parent() -> argparse.ArgumentParser:
    return REVIEW_FLAGS.parent()


def review_settings(args: argparse.Namespace) -> ReviewSettings:
    return REVIEW_FLAGS.from_args(args)


def settings_markdown() -> str:
    """The README's table of the console's settings, generated from the settings class."""
    return REVIEW_FLAGS.markdown()


def known_variables() -> list[str]:
    return REVIEW_FLAGS.variables()


def add_parser(commands, worker_settings: argparse.ArgumentParser) -> None:
    parents = [worker_settings, settings_parent()]
    review = commands.add_parser("review", parents=parents, help="the moderators' review console")
    parts = review.add_subparsers(dest="review_command")
    parts.add_parser("ingest", parents=parents, help="only the ingester (consumes the review topic)")
    parts.add_parser("web", parents=parents, help="only the web console and its outbox publisher")
    parts.add_parser("migrate", parents=parents, help="bring the database schema up to date")
    users = parts.add_parser("users", parents=parents, help="local users")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    add = user_commands.add_parser("add", parents=parents, help="add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=["moderator", "lead", "admin"], required=True)
    how = add.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    how.add_argument("--no-password", action="store_true", help="a proxy-authenticated user, no password")
    for verb in ("disable", "enable"):
        user_commands.add_parser(verb, parents=parents, help=f"{verb} a user").add_argument("name")
    user_commands.add_parser("list", parents=parents, help="list users")
    for export in ("export-labels", "export-audit"):
        command = parts.add_parser(export, parents=parents, help=f"write the {export[7:]} as JSONL")
        command.add_argument("--out", help="a file (default: standard output)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from moderation_worker.review.service import PARTS, serve

    review = review_settings(args)
    command = args.review_command
    if command in (None, "ingest", "web"):
        return serve(settings, review, parts=PARTS if command is None else frozenset({command}))
    if command == "migrate":
        from moderation_worker.review.store import make_engine, migrate

        print(f"database at revision {migrate(make_engine(review.database_url))}")
        return 0
    if command == "users":
        return _users(args, review)
    return _export(args, review)


def _database(review: ReviewSettings):
    from moderation_worker.review.store import make_engine, migrate, session_factory

    engine = make_engine(review.database_url)
    migrate(engine)
    return session_factory(engine)


def _users(args: argparse.Namespace, review: ReviewSettings) -> int:
    from sqlalchemy import select

    from moderation_worker.review import auth
    from moderation_worker.review.models import User
    from moderation_worker.review.store import transaction

    sessions = _database(review)
    with transaction(sessions) as session:
        if args.users_command == "list":
            for user in session.scalars(select(User).order_by(User.name)):
                state = "disabled" if user.disabled else "enabled"
                login = "password" if user.password_hash else "proxy only"
                print(f"{user.name}\t{user.role}\t{state}\t{login}")
            return 0
        if args.users_command == "add":
            password, generated = None, False
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            elif not args.no_password:
                password = _ask_password() if sys.stdin.isatty() else secrets.token_urlsafe(12)
                generated = not sys.stdin.isatty()
            try:
                auth.add_user(session, args.name, args.role, password, actor="cli")
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"added {args.name} ({args.role})" + (f"; password: {password}" if generated else ""))
            return 0
        user = session.scalar(select(User).where(User.name == args.name))
        if user is None:
            print(f"error: no user {args.name!r}", file=sys.stderr)
            return 2
        auth.set_disabled(session, user, args.users_command == "disable", actor="cli")
        print(f"{args.users_command}d {args.name}")
        return 0


def _ask_password() -> str:
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("error: the passwords differ")
    return first


def _export(args: argparse.Namespace, review: ReviewSettings) -> int:
    from moderation_worker.review import audit, labels
    from moderation_worker.review.store import transaction

    sessions = _database(review)
    write = labels.export_jsonl if args.review_command == "export-labels" else audit.export_jsonl
    with transaction(sessions) as session:
        lines: Iterable[str] = write(session)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as out:
                count = sum(out.write(line) > 0 for line in lines)
            print(f"wrote {count} lines to {args.out}", file=sys.stderr)
        else:
            for line in lines:
                sys.stdout.write(line)
    return 0
