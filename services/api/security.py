"""API keys and rate limits.

A key is the token ``egx_<id>_<secret>``: ``id`` is public (the row of ``api_keys``), ``secret`` is 256 random
bits of which only an argon2id hash is stored; the token is shown once, by ``python -m services.api keys
create``. A verified token is remembered for ``key_cache_s`` under its SHA-256 (argon2 is slow on purpose;
paying it on every request would make the API a denial-of-service target), so a revocation takes effect within
that period. Tokens come in ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``, and are never logged.

Scopes: ``read`` and ``write``. Writes need a key with ``write`` (401 without a key, 403 with a read-only one);
reads need a key only when ``EGX_API_READS_NEED_KEY`` is set. Every request is counted against a moving-window
limit (``limits``) per key, or per client address when it carries no key; past it the answer is 429 with
``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine

from earthgptx.store.models import ApiKey
from services.api.errors import Forbidden, RateLimited, Unauthorized

TOKEN_PREFIX = "egx"
SCOPES = ("read", "write")

_keys = cast(sa.Table, ApiKey.__table__)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key (id, owner, scopes) or an anonymous client (by address)."""

    key_id: str | None
    owner: str | None
    scopes: frozenset[str]
    client: str

    @property
    def limit_key(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"addr:{self.client}"


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    token: str


class KeyStore:
    """Issue, verify and revoke keys in ``api_keys`` (argon2id hashes, bound parameters only)."""

    def __init__(self, engine: Engine, *, cache_s: float = 60.0, hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self.hasher = hasher or PasswordHasher()
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create(self, owner: str, scopes: Sequence[str] = SCOPES) -> IssuedKey:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(f"scopes must be among {list(SCOPES)}, got {list(scopes)}")
        if not owner.strip():
            raise ValueError("a key needs an owner name")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(_keys).values(
                    id=key_id, key_hash=self.hasher.hash(secret), owner=owner.strip(), scopes=sorted(set(scopes))
                )
            )
        return IssuedKey(key_id, f"{TOKEN_PREFIX}_{key_id}_{secret}")

    def revoke(self, key_id: str) -> bool:
        statement = (
            sa.update(_keys).where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None)).values(revoked_at=sa.func.now())
        )
        with self.engine.begin() as connection:
            done = connection.execute(statement).rowcount == 1
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[1].key_id != key_id}
        return done

    def list(self) -> list[dict[str, object]]:
        query = sa.select(_keys.c.id, _keys.c.owner, _keys.c.scopes, _keys.c.created_at, _keys.c.revoked_at)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query.order_by(_keys.c.created_at))]

    def verify(self, token: str, client: str) -> Principal:
        """The key a token belongs to; raises ``Unauthorized`` for a malformed, unknown, wrong or revoked one."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return Principal(cached[1].key_id, cached[1].owner, cached[1].scopes, client)
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != TOKEN_PREFIX or not key_id or not secret:
            raise Unauthorized("the API key is malformed; expected egx_<id>_<secret>")
        query = sa.select(_keys.c.key_hash, _keys.c.owner, _keys.c.scopes, _keys.c.revoked_at).where(
            _keys.c.id == key_id
        )
        with self.engine.begin() as connection:
            row = connection.execute(query).first()
            if row is None or row.revoked_at is not None:
                raise Unauthorized("the API key is unknown or revoked")
            try:
                self.hasher.verify(row.key_hash, secret)
            except (VerificationError, InvalidHashError):
                raise Unauthorized("the API key is unknown or revoked") from None
            connection.execute(sa.update(_keys).where(_keys.c.id == key_id).values(last_used_at=sa.func.now()))
        principal = Principal(key_id, row.owner, frozenset(row.scopes or ()), client)
        with self._lock:
            self._cache[digest] = (now + self.cache_s, principal)
        return principal


class RateLimiter:
    """A moving-window limit per principal (in memory: one API process; a shared storage for more)."""

    def __init__(self, limit: str) -> None:
        self.item = parse(limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, principal: Principal) -> None:
        if self.limiter.hit(self.item, principal.limit_key):
            return
        reset_at, _ = self.limiter.get_window_stats(self.item, principal.limit_key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"more than {self.item} requests; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
        )


def require_scope(principal: Principal, scope: str) -> None:
    if principal.key_id is None:
        raise Unauthorized(f"this request needs an API key with the '{scope}' scope")
    if scope not in principal.scopes:
        raise Forbidden(f"the API key has no '{scope}' scope")
