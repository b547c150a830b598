"""Who is asking: local users (argon2id hashes), server-side sessions, CSRF tokens, the login limit,
and the header of an authenticating proxy when one is configured.

Sessions live in the database, not in a signed cookie: every console replica accepts them, and
disabling a user ends their sessions at once (their rows are deleted). The cookie holds a random
token; the database holds only its sha256. Each session has its CSRF token, which every
state-changing request must carry (a form field or the ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address, ip_network

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as DbSession

from moderation_worker.review.audit import record
from moderation_worker.review.models import ROLES, LoginAttempt, Session, User, utcnow

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters
# Verified against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class LoginRefused(Exception):
    """Wrong name or password, a disabled user, or too many attempts: one message for all but the last.

    Raised by ``login`` after the attempt was recorded in the caller's session: the caller commits
    even so (``login`` flushes nothing away), or the failure would not count towards the limit."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking, as plain values: pages (an error page too, rendered after the request's
    database session has ended) show these, never the ORM objects."""

    name: str
    role: str
    csrf_token: str


@dataclass(frozen=True)
class Authenticated:
    user: User
    session: Session
    csrf_token: str

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.user.name, self.user.role, self.csrf_token)


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def add_user(session: DbSession, name: str, role: str, password: str | None, *, actor: str) -> User:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not name or len(name) > 128 or not name.isprintable():
        raise ValueError("a user name is 1 to 128 printable characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name!r} exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    record(
        session, actor=actor, action="user_add", target=name, after={"role": role, "password": bool(password)}
    )
    return user


def set_disabled(session: DbSession, user: User, disabled: bool, *, actor: str) -> None:
    before = {"disabled": user.disabled}
    user.disabled = disabled
    if disabled:
        session.execute(delete(Session).where(Session.user_id == user.id))  # ends every login at once
    record(session, actor=actor, action="user_disable" if disabled else "user_enable", target=user.name,
           before=before, after={"disabled": disabled})  # fmt: skip


def set_role(session: DbSession, user: User, role: str, *, actor: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    before = {"role": user.role}
    user.role = role
    record(session, actor=actor, action="user_role", target=user.name, before=before, after={"role": role})


def login(
    session: DbSession,
    name: str,
    password: str,
    *,
    address: str,
    ttl_s: float,
    max_failures: int,
    window_s: float,
    now: datetime | None = None,
) -> tuple[str, Authenticated]:
    """A new session for valid credentials: (cookie token, who). LoginRefused otherwise."""
    now = now or utcnow()
    name = name[:128]
    failures = session.scalar(
        select(func.count()).where(
            LoginAttempt.username == name,
            LoginAttempt.address == address,
            LoginAttempt.ok.is_(False),
            LoginAttempt.at > now - timedelta(seconds=window_s),
        )
    )
    if (failures or 0) >= max_failures:
        record(session, actor=name, action="login_limited", after={"address": address})
        raise LoginRefused("too many failed logins; wait a few minutes and try again")
    user = session.scalar(select(User).where(User.name == name))
    ok = _verify(user.password_hash if user is not None else None, password) and not user.disabled
    session.add(LoginAttempt(username=name, address=address, at=now, ok=ok))
    record(session, actor=name, action="login" if ok else "login_failed", after={"address": address})
    if not ok:
        raise LoginRefused("wrong user name or password")
    return open_session(session, user, ttl_s=ttl_s, now=now)


def open_session(
    session: DbSession, user: User, *, ttl_s: float, now: datetime | None = None
) -> tuple[str, Authenticated]:
    """A new server-side session for ``user``: (the cookie's token, who)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    row = Session(
        token_hash=_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(row)
    return token, Authenticated(user, row, row.csrf_token)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def from_cookie(
    session: DbSession, token: str | None, *, ttl_s: float, now: datetime | None = None
) -> Authenticated | None:
    """The session a cookie names, if it is live and its user enabled; sliding expiry."""
    if not token or len(token) > 128:
        return None
    now = now or utcnow()
    row = session.get(Session, _digest(token))
    if row is None or row.expires_at < now:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    row.expires_at = now + timedelta(seconds=ttl_s)
    return Authenticated(user, row, row.csrf_token)


def from_proxy(
    session: DbSession, header_value: str | None, client: str | None, trusted: tuple[str, ...]
) -> User | None:
    """The user an authenticating proxy names, only when the request comes from a trusted address.

    The user must exist and be enabled (admins add proxy users without a password). The web layer
    then gives the browser a session of ours (``open_session``), so CSRF tokens work on every replica.
    """
    if not header_value or not client or not trusted:
        return None
    try:
        address = ip_address(client)
    except ValueError:
        return None
    if not any(address in ip_network(network, strict=False) for network in trusted):
        return None
    user = session.scalar(select(User).where(User.name == header_value.strip()))
    if user is None or user.disabled:
        return None
    return user


def csrf_ok(who: Authenticated, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(who.csrf_token.encode(), presented.encode())


def logout(session: DbSession, token: str | None) -> None:
    if token:
        session.execute(delete(Session).where(Session.token_hash == _digest(token)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
