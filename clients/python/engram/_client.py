"""Engram (blocking, grpc) and AsyncEngram (asyncio, grpc.aio)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from engram._api import Admin, Memories, Messages, Session, Sessions, Users
from engram._core import STREAM_DEADLINE, OnRetry, Tls, _AioCore, _SyncCore


class _Base:
    _core: Any

    def _namespaces(self) -> None:
        self.sessions = Sessions(self._core)
        self.messages = Messages(self._core)
        self.memories = Memories(self._core)
        self.users = Users(self._core)
        self.admin = Admin(self._core)

    @property
    def lsn(self) -> int:
        """The highest engram-lsn this client has seen (0: none yet)."""
        return int(self._core.tracker.lsn)

    def reset_lsn(self) -> None:
        """Forgets the LSN this client's reads wait for (Session objects
        with an LSN of their own keep it: session.reset_lsn()). For a client
        that outlived its node's data: a node wiped or restored from an older
        backup, or a failover to a replica that missed writes, never reaches
        the old LSN, and every read would fail UNAVAILABLE "engram-min-lsn
        ... not applied on this node yet"."""
        self._core.tracker.reset()

    def session(self, session_id: str) -> Session:
        """A Session object for session_id (no call is made)."""
        return Session(self._core, session_id)


class Engram(_Base):
    """A client of one engramd (or a Service in front of several).

    target: "host:port". token: the bearer token (None: dev mode). tls: None
    (plaintext), True (the system's roots) or grpc.ChannelCredentials.
    deadline: seconds each call may take, retries included (None: no
    deadline). stream_deadline: seconds a server stream (users.export_user,
    admin.backup) may take, default 3600 (None: none); the unary deadline
    would cut a large export. retries: extra attempts after UNAVAILABLE, for reads and
    retry-safe writes. consistency: "client" (reads wait for this client's
    writes, via engram-min-lsn), "session" (Session objects wait for their
    own writes only) or "none". backoff: (first, cap) in seconds of the
    exponential backoff; each retry waits RetryInfo's delay (if any) plus a
    random part of up to min(cap, first * 2**n) (full jitter). on_retry(error, attempt, delay) is called
    before each retry. options: extra gRPC channel options.
    Thread safety: one client may be used from many threads."""

    def __init__(self, target: str, token: Optional[str] = None, tls: Tls = None,
                 deadline: Optional[float] = 10.0, retries: int = 3,
                 consistency: str = "client", *, backoff: Tuple[float, float] = (0.1, 2.0),
                 on_retry: Optional[OnRetry] = None,
                 stream_deadline: Optional[float] = STREAM_DEADLINE,
                 options: Sequence[Tuple[str, Any]] = ()) -> None:
        self._core = _SyncCore(target, tls, options, token=token, deadline=deadline,
                               retries=retries, consistency=consistency, backoff=backoff,
                               on_retry=on_retry, stream_deadline=stream_deadline)
        self._namespaces()

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> "Engram":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncEngram(_Base):
    """Engram over grpc.aio: the same arguments and namespaces; every method
    returns an awaitable and list iterators are async iterators. Create it
    inside the event loop that uses it."""

    def __init__(self, target: str, token: Optional[str] = None, tls: Tls = None,
                 deadline: Optional[float] = 10.0, retries: int = 3,
                 consistency: str = "client", *, backoff: Tuple[float, float] = (0.1, 2.0),
                 on_retry: Optional[OnRetry] = None,
                 stream_deadline: Optional[float] = STREAM_DEADLINE,
                 options: Sequence[Tuple[str, Any]] = ()) -> None:
        self._core = _AioCore(target, tls, options, token=token, deadline=deadline,
                              retries=retries, consistency=consistency, backoff=backoff,
                              on_retry=on_retry, stream_deadline=stream_deadline)
        self._namespaces()

    async def close(self) -> None:
        await self._core.close()

    async def __aenter__(self) -> "AsyncEngram":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
