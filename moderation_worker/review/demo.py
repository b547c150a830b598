"""``moderation-worker demo --review``: after the demo's run, the console on the same embedded stack.

SQLite in the demo's data folder, one demo user (a lead, so every page can be seen) with a password
made up for this run, the URL and the login printed; everything stops on Ctrl-C.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from moderation_worker.config import Settings
from moderation_worker.localstack import free_port
from moderation_worker.review.settings import ReviewSettings

DEMO_USER = "demo"


def _port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def serve_console(settings: Settings, data_dir: Path) -> int:
    from moderation_worker.review import auth
    from moderation_worker.review.service import serve
    from moderation_worker.review.store import make_engine, migrate, session_factory, transaction

    password = secrets.token_urlsafe(9)
    review = ReviewSettings(
        database_url=f"sqlite:///{data_dir / 'review.db'}",
        host="127.0.0.1",
        port=_port(8090),
        sample_rate=0.5,  # the demo has few allow verdicts: sample many of them
    )
    engine = make_engine(review.database_url)
    migrate(engine)
    with transaction(session_factory(engine)) as session:
        auth.add_user(session, DEMO_USER, "lead", password, actor="demo")
    engine.dispose()
    rule = "-" * 100
    print(rule)
    print(f"The review console: http://127.0.0.1:{review.port}/  (user {DEMO_USER!r}, password {password!r})")
    print("It ingests the flagged verdicts above. Ctrl-C stops the console and the embedded stack.")
    print(rule)
    return serve(settings, review)
