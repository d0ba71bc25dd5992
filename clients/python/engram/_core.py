"""Call machinery under the namespaces: one channel, deadlines, retries,
read-your-writes. _SyncCore runs calls on a grpc.Channel, _AioCore on a
grpc.aio.Channel; both share _Core's policy, so the namespaces (engram/_api.py)
serve both clients."""
from __future__ import annotations

import asyncio
import enum
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import (Any, AsyncIterator, Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import grpc
from google.protobuf.message import Message as PbMessage

from engram import _errors, _pb

LSN_KEY = "engram-lsn"
MIN_LSN_KEY = "engram-min-lsn"
# Pages of memories with embeddings pass gRPC's default 4 MiB receive limit.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
# Default bound of a server-streaming call (ExportUser, Backup), seconds:
# the unary deadline would cut a large export or a backup; engramd bounds
# these streams itself (--export-max-ms, --backup-max-ms, 1 h at most by
# default).
STREAM_DEADLINE = 3600.0
# Bound on the pages one iterator follows: a server that keeps answering a
# next_page_token would otherwise loop forever.
MAX_PAGES = 1_000_000

Metadata = Sequence[Tuple[str, Union[str, bytes]]]
OnRetry = Callable[[_errors.EngramError, int, float], None]
Tls = Union[None, bool, grpc.ChannelCredentials]


class Kind(enum.Enum):
    """What a call may be retried as: READ always (on UNAVAILABLE), SAFE_WRITE
    when the contract makes a repeat harmless, WRITE never."""
    READ = 1
    SAFE_WRITE = 2
    WRITE = 3


class Consistency(str, enum.Enum):
    CLIENT = "client"    # one LSN for the client: reads see all its writes
    SESSION = "session"  # Session objects carry their own LSN as well
    NONE = "none"        # no engram-min-lsn sent


class LsnTracker:
    """The highest engram-lsn seen; with a parent, the parent sees it too.
    Thread safety: any thread (and any task)."""

    def __init__(self, parent: Optional["LsnTracker"] = None) -> None:
        self._mu = threading.Lock()
        self._lsn = 0
        self._parent = parent

    @property
    def lsn(self) -> int:
        return self._lsn

    def note(self, lsn: int) -> None:
        with self._mu:
            if lsn > self._lsn:
                self._lsn = lsn
        if self._parent is not None:
            self._parent.note(lsn)

    def reset(self) -> None:
        """Forgets the LSN (this tracker's only, not its parent's)."""
        with self._mu:
            self._lsn = 0


@dataclass(frozen=True)
class Rpc:
    """One RPC: its service's stub class, method name, request class and
    retry kind (a kind function decides per request, after filling it);
    fill, when given, returns the request to send in place of the built one
    (never changing the one it is given)."""
    stub: Any
    method: str
    request: Any
    kind: Union[Kind, Callable[[Any], Kind]]
    fill: Optional[Callable[[Any], Any]] = None


def build_request(rpc: Rpc, request: Any, fields: Mapping[str, Any]) -> Any:
    """request (a message or a dict of its fields) or the keyword fields,
    never both; then rpc.fill's version of it. The caller's message is
    never changed."""
    if request is not None and fields:
        raise TypeError("%s: pass a request or keyword fields, not both" % rpc.method)
    if request is None:
        req = rpc.request(**fields)
    elif isinstance(request, Mapping):
        req = rpc.request(**request)
    elif isinstance(request, rpc.request):
        req = request
    else:
        raise TypeError("%s: request must be %s, not %s" % (
            rpc.method, rpc.request.DESCRIPTOR.full_name, type(request).__name__))
    return rpc.fill(req) if rpc.fill is not None else req


def fill_client_message_ids(req: Any) -> Any:
    """AppendMessages is retry-safe once every message has a
    client_message_id (the server does not append an id twice): a copy of
    req in which each message without one has a random id. req itself stays
    as it was: a caller who reuses it for the next append must not send the
    same ids again (the server would answer with the first append's
    messages and drop the new ones)."""
    if all(m.client_message_id for m in req.messages):
        return req
    out = type(req)()
    out.CopyFrom(req)
    for m in out.messages:
        if not m.client_message_id:
            m.client_message_id = "sdk-" + uuid.uuid4().hex
    return out


def create_session_kind(req: Any) -> Kind:
    """A CreateSession with a session_id returns the existing session when
    repeated; without one each call makes a new session."""
    return Kind.SAFE_WRITE if req.session.session_id else Kind.WRITE


def fork_session_kind(req: Any) -> Kind:
    """A ForkSession with a new_session_id returns the fork it made when
    repeated; without one each call makes a new fork."""
    return Kind.SAFE_WRITE if req.new_session_id else Kind.WRITE


class _Core:
    def __init__(self, token: Optional[str], deadline: Optional[float], retries: int,
                 consistency: str, backoff: Tuple[float, float],
                 on_retry: Optional[OnRetry],
                 stream_deadline: Optional[float] = STREAM_DEADLINE) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        for name, v in (("deadline", deadline), ("stream_deadline", stream_deadline)):
            if v is not None and v <= 0:
                raise ValueError("%s must be > 0 seconds (or None for none)" % name)
        self.consistency = Consistency(consistency)
        self.deadline = deadline
        self.stream_deadline = stream_deadline
        self.retries = retries
        self.backoff = backoff
        self.on_retry = on_retry
        self.md: Tuple[Tuple[str, str], ...] = (
            (("authorization", "Bearer " + token),) if token else ())
        self.tracker = LsnTracker()
        self._stubs: Dict[Any, Any] = {}

    def stub(self, cls: Any) -> Any:
        s = self._stubs.get(cls)
        if s is None:
            s = self._stubs[cls] = cls(self.channel)  # type: ignore[attr-defined]
        return s

    def tracker_for_session(self) -> LsnTracker:
        """The LSN a new Session object keeps: its own (reporting to the
        client's) in session consistency, else the client's."""
        if self.consistency is Consistency.SESSION:
            return LsnTracker(self.tracker)
        return self.tracker

    def prepare(self, rpc: Rpc, req: Any, tracker: Optional[LsnTracker],
                timeout: Optional[float], metadata: Optional[Metadata], stream: bool = False
                ) -> Tuple[Kind, List[Tuple[str, Any]], Optional[float]]:
        kind = rpc.kind(req) if callable(rpc.kind) else rpc.kind
        md: List[Tuple[str, Any]] = list(self.md) + list(metadata or ())
        t = tracker or self.tracker
        if kind is Kind.READ and self.consistency is not Consistency.NONE and t.lsn:
            md.append((MIN_LSN_KEY, str(t.lsn)))
        budget = timeout if timeout is not None else (
            self.stream_deadline if stream else self.deadline)
        end = None if budget is None else time.monotonic() + budget
        return kind, md, end

    @staticmethod
    def note_lsn(tracker: LsnTracker, initial: Optional[Metadata]) -> None:
        for k, v in initial or ():
            if k == LSN_KEY:
                tracker.note(int(v))

    def retry_delay(self, kind: Kind, err: _errors.EngramError, attempt: int,
                    end: Optional[float]) -> Optional[float]:
        """Seconds to wait before attempt + 1, or None: do not retry."""
        if kind is Kind.WRITE or err.code != grpc.StatusCode.UNAVAILABLE:
            return None
        if attempt >= self.retries:
            return None
        base, cap = self.backoff
        # Full jitter over an exponential backoff (capped), added to the
        # server's RetryInfo delay as a floor: engramd sends the same delay
        # to every client of a failover, so the delay alone would have them
        # all retry together.
        delay = (err.retry_delay or 0.0) + random.uniform(0, min(cap, base * (2 ** attempt)))
        if end is not None and time.monotonic() + delay >= end:
            return None
        # A retry is sent with wait_for_ready: a channel that lost its
        # server fails calls at once until it reconnects (measured: seconds
        # after the server was back), so the retry waits for the connection
        # instead, within the deadline.
        if self.on_retry is not None:
            self.on_retry(err, attempt + 1, delay)
        return delay

    @staticmethod
    def give_up(err: _errors.EngramError, last: Optional[_errors.EngramError]
                ) -> _errors.EngramError:
        """What a call that will not be retried again raises: err. When err
        is a DEADLINE_EXCEEDED after retries, it carries the error of the
        attempt before as its last_error (and __cause__): the type stays
        the one a caller catches for "too slow", and "engram-min-lsn 21 not
        applied" still says why the retries failed. A DEADLINE_EXCEEDED
        sent by the server keeps its own message ("the write may have been
        applied there" is not the earlier "not acknowledged; retry")."""
        if last is not None and err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            err.last_error = last
            err.__cause__ = last
        else:
            err.__cause__ = None
        err.__suppress_context__ = True
        return err

    @staticmethod
    def remaining(end: Optional[float]) -> Optional[float]:
        return None if end is None else max(0.001, end - time.monotonic())


def channel_options(extra: Sequence[Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    return [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            # Reconnect soon after a restart, so a retry inside the deadline
            # finds the server: after a failed connect the channel resolves
            # the target again, at most this often (gRPC's default waits
            # seconds), then connects with this backoff.
            ("grpc.dns_min_time_between_resolutions_ms", 500),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # Subchannels of the process-wide pool are shared with other
            # channels and keep their reconnect backoff (seconds, measured
            # here) whatever this channel asks.
            ("grpc.use_local_subchannel_pool", 1)] + list(extra)


def credentials(tls: Tls) -> Optional[grpc.ChannelCredentials]:
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    raise TypeError("tls must be None, True or grpc.ChannelCredentials")


class _SyncCore(_Core):
    def __init__(self, target: str, tls: Tls, options: Sequence[Tuple[str, Any]],
                 **kw: Any) -> None:
        super().__init__(**kw)
        creds = credentials(tls)
        opts = channel_options(options)
        self.channel = (grpc.secure_channel(target, creds, opts) if creds
                        else grpc.insecure_channel(target, opts))

    def close(self) -> None:
        self.channel.close()

    def unary(self, rpc: Rpc, request: Any, fields: Mapping[str, Any], *,
              tracker: Optional[LsnTracker] = None, timeout: Optional[float] = None,
              metadata: Optional[Metadata] = None) -> Any:
        req = build_request(rpc, request, fields)
        kind, md, end = self.prepare(rpc, req, tracker, timeout, metadata)
        fn = getattr(self.stub(rpc.stub), rpc.method)
        attempt = 0
        last = None
        while True:
            try:
                resp, call = fn.with_call(req, timeout=self.remaining(end), metadata=md,
                                          wait_for_ready=attempt > 0 or None)
            except grpc.RpcError as e:
                err = _errors.from_rpc_error(e)
                delay = self.retry_delay(kind, err, attempt, end)
                if delay is None:
                    raise self.give_up(err, last)
                last = err
                time.sleep(delay)
                attempt += 1
                continue
            self.note_lsn(tracker or self.tracker, call.initial_metadata())
            return resp

    def paged(self, rpc: Rpc, items: str, request: Any, fields: Mapping[str, Any],
              **kw: Any) -> Iterator[Any]:
        req = build_request(rpc, request, fields)
        for _ in range(MAX_PAGES):
            page = self.unary(rpc, req, {}, **kw)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            nxt = rpc.request()
            nxt.CopyFrom(req)
            nxt.page_token = page.next_page_token
            req = nxt
        raise RuntimeError("%s: more than %d pages" % (rpc.method, MAX_PAGES))

    def stream(self, rpc: Rpc, request: Any, fields: Mapping[str, Any], *,
               tracker: Optional[LsnTracker] = None, timeout: Optional[float] = None,
               metadata: Optional[Metadata] = None) -> Iterator[Any]:
        """A server-streaming call, not retried (a repeat would restart it),
        bounded by timeout or else the client's stream_deadline."""
        req = build_request(rpc, request, fields)
        _, md, end = self.prepare(rpc, req, tracker, timeout, metadata, stream=True)
        it = getattr(self.stub(rpc.stub), rpc.method)(req, timeout=self.remaining(end),
                                                        metadata=md)
        try:
            yield from it
        except grpc.RpcError as e:
            raise _errors.from_rpc_error(e) from None
        finally:
            it.cancel()


class _AioCore(_Core):
    def __init__(self, target: str, tls: Tls, options: Sequence[Tuple[str, Any]],
                 **kw: Any) -> None:
        super().__init__(**kw)
        creds = credentials(tls)
        opts = channel_options(options)
        self.channel = (grpc.aio.secure_channel(target, creds, opts) if creds
                        else grpc.aio.insecure_channel(target, opts))

    async def close(self) -> None:
        await self.channel.close()

    async def unary(self, rpc: Rpc, request: Any, fields: Mapping[str, Any], *,
                    tracker: Optional[LsnTracker] = None, timeout: Optional[float] = None,
                    metadata: Optional[Metadata] = None) -> Any:
        req = build_request(rpc, request, fields)
        kind, md, end = self.prepare(rpc, req, tracker, timeout, metadata)
        fn = getattr(self.stub(rpc.stub), rpc.method)
        attempt = 0
        last = None
        while True:
            call = fn(req, timeout=self.remaining(end), metadata=md,
                      wait_for_ready=attempt > 0 or None)
            try:
                resp = await call
            except grpc.RpcError as e:
                err = _errors.from_rpc_error(e)
                delay = self.retry_delay(kind, err, attempt, end)
                if delay is None:
                    raise self.give_up(err, last)
                last = err
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.note_lsn(tracker or self.tracker, await call.initial_metadata())
            return resp

    async def paged(self, rpc: Rpc, items: str, request: Any, fields: Mapping[str, Any],
                    **kw: Any) -> AsyncIterator[Any]:
        req = build_request(rpc, request, fields)
        for _ in range(MAX_PAGES):
            page = await self.unary(rpc, req, {}, **kw)
            for item in getattr(page, items):
                yield item
            if not page.next_page_token:
                return
            nxt = rpc.request()
            nxt.CopyFrom(req)
            nxt.page_token = page.next_page_token
            req = nxt
        raise RuntimeError("%s: more than %d pages" % (rpc.method, MAX_PAGES))

    async def stream(self, rpc: Rpc, request: Any, fields: Mapping[str, Any], *,
                     tracker: Optional[LsnTracker] = None, timeout: Optional[float] = None,
                     metadata: Optional[Metadata] = None) -> AsyncIterator[Any]:
        req = build_request(rpc, request, fields)
        _, md, end = self.prepare(rpc, req, tracker, timeout, metadata, stream=True)
        call = getattr(self.stub(rpc.stub), rpc.method)(req, timeout=self.remaining(end),
                                                          metadata=md)
        try:
            async for item in call:
                yield item
        except grpc.RpcError as e:
            raise _errors.from_rpc_error(e) from None
        finally:
            call.cancel()
