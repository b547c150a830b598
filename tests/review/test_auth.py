"""Accounts and sessions, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from moderation_worker.review import auth
from moderation_worker.review.auth import LoginRefused
from moderation_worker.review.models import AuditEntry, User, utcnow
from moderation_worker.review.store import transaction

LIMITS = dict(ttl_s=3600, max_failures=3, window_s=900)


def _add(sessions, name="alice", role="moderator", password="correct horse"):
    with transaction(sessions) as session:
        return auth.add_user(session, name, role, password, actor="test")


def _login(sessions, name, password, address="10.0.0.1", **kwargs):
    # As the login page does: the attempt is committed whether the login succeeds or not.
    with sessions() as session:
        try:
            return auth.login(session, name, password, address=address, **(LIMITS | kwargs))
        finally:
            session.commit()


def test_passwords_are_stored_as_argon2id_hashes_and_verified(sessions):
    _add(sessions)
    with transaction(sessions) as session:
        stored = session.scalar(select(User.password_hash))
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    token, who = _login(sessions, "alice", "correct horse")
    assert who.user.name == "alice" and len(token) > 30
    with transaction(sessions) as session:
        assert auth.from_cookie(session, token, ttl_s=3600).user.name == "alice"
        assert auth.from_cookie(session, token + "x", ttl_s=3600) is None


@pytest.mark.parametrize(("name", "password"), [("alice", "wrong"), ("nobody", "correct horse")])
def test_a_wrong_password_and_an_unknown_user_get_the_same_refusal(sessions, name, password):
    _add(sessions)
    with pytest.raises(LoginRefused, match="wrong user name or password"):
        _login(sessions, name, password)


def test_logins_are_limited_per_user_and_address(sessions):
    _add(sessions)
    for _ in range(3):
        with pytest.raises(LoginRefused, match="wrong"):
            _login(sessions, "alice", "guess")
    # the right password now waits out the window, from this address; another address is not blocked
    with pytest.raises(LoginRefused, match="too many"):
        _login(sessions, "alice", "correct horse")
    _login(sessions, "alice", "correct horse", address="10.0.0.2")
    later = utcnow() + timedelta(seconds=901)
    _login(sessions, "alice", "correct horse", now=later)
    with transaction(sessions) as session:
        actions = session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "alice")).all()
    assert actions.count("login_failed") == 3 and "login_limited" in actions and actions.count("login") == 2


def test_disabling_a_user_ends_their_sessions_at_once(sessions):
    _add(sessions)
    token, _ = _login(sessions, "alice", "correct horse")
    with transaction(sessions) as session:
        auth.set_disabled(session, session.scalar(select(User)), True, actor="admin")
    with transaction(sessions) as session:
        assert auth.from_cookie(session, token, ttl_s=3600) is None
    with pytest.raises(LoginRefused):
        _login(sessions, "alice", "correct horse", address="10.0.0.9")


def test_an_expired_session_is_refused(sessions):
    _add(sessions)
    token, _ = _login(sessions, "alice", "correct horse", ttl_s=1)
    with transaction(sessions) as session:
        assert auth.from_cookie(session, token, ttl_s=1, now=utcnow() + timedelta(seconds=5)) is None


def test_the_proxy_header_is_trusted_only_from_the_proxy(sessions):
    _add(sessions, name="bob", password=None)
    with transaction(sessions) as session:
        assert auth.from_proxy(session, "bob", "10.1.2.3", ("10.1.0.0/16",)).name == "bob"
        assert auth.from_proxy(session, "bob", "192.168.1.1", ("10.1.0.0/16",)) is None
        assert auth.from_proxy(session, "bob", "10.1.2.3", ()) is None
        assert auth.from_proxy(session, "mallory", "10.1.2.3", ("10.1.0.0/16",)) is None


def test_a_proxy_only_user_cannot_log_in_with_a_password(sessions):
    _add(sessions, name="bob", password=None)
    with pytest.raises(LoginRefused):
        _login(sessions, "bob", "")


def test_short_passwords_and_bad_roles_are_refused(sessions):
    with pytest.raises(ValueError, match="8 characters"):
        _add(sessions, password="short")
    with pytest.raises(ValueError, match="role"):
        _add(sessions, role="root")
