"""The namespaces (sessions, messages, memories, users, admin) and Session
objects. Each method is named after its RPC in snake_case and takes either a
request message (or a dict of its fields) or the request's fields as keyword
arguments, plus `timeout` (seconds, instead of the client's deadline) and
`metadata` (extra request metadata). List methods return an iterator over
every item, following next_page_token; `..._page` returns one response.

The same classes serve Engram and AsyncEngram: on AsyncEngram every method
returns an awaitable, and the iterators are async iterators."""
from __future__ import annotations

from typing import Any, Iterator, Optional

from engram import _pb
from engram._core import (Kind, LsnTracker, Metadata, Rpc, create_session_kind,
                          fill_client_message_ids, fork_session_kind)

S, M, U, A = (_pb.session, _pb.memory, _pb.user, _pb.admin)
SG, MG, UG, AG = (_pb.session_grpc.SessionServiceStub, _pb.memory_grpc.MemoryServiceStub,
                  _pb.user_grpc.UserServiceStub, _pb.admin_grpc.AdminServiceStub)


class _HealthStub:
    """grpc.health.v1.Health/Check without the generated grpc module (the SDK
    only ships the messages, see engram/_pb.py); works on both channel kinds."""

    def __init__(self, channel: Any) -> None:
        self.Check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=_pb.health.HealthCheckRequest.SerializeToString,
            response_deserializer=_pb.health.HealthCheckResponse.FromString)


CREATE_SESSION = Rpc(SG, "CreateSession", S.CreateSessionRequest, create_session_kind)
GET_SESSION = Rpc(SG, "GetSession", S.GetSessionRequest, Kind.READ)
LIST_SESSIONS = Rpc(SG, "ListSessions", S.ListSessionsRequest, Kind.READ)
END_SESSION = Rpc(SG, "EndSession", S.EndSessionRequest, Kind.WRITE)
UPDATE_SESSION = Rpc(SG, "UpdateSession", S.UpdateSessionRequest, Kind.WRITE)
DELETE_SESSION = Rpc(SG, "DeleteSession", S.DeleteSessionRequest, Kind.WRITE)
APPEND_MESSAGES = Rpc(SG, "AppendMessages", S.AppendMessagesRequest, Kind.SAFE_WRITE,
                      fill_client_message_ids)
LIST_MESSAGES = Rpc(SG, "ListMessages", S.ListMessagesRequest, Kind.READ)
GET_CONTEXT = Rpc(SG, "GetContext", S.GetContextRequest, Kind.READ)
UPDATE_SUMMARY = Rpc(SG, "UpdateSummary", S.UpdateSummaryRequest, Kind.WRITE)
FORK_SESSION = Rpc(SG, "ForkSession", S.ForkSessionRequest, fork_session_kind)
SEARCH_MESSAGES = Rpc(SG, "SearchMessages", S.SearchMessagesRequest, Kind.READ)

CREATE_MEMORY = Rpc(MG, "CreateMemory", M.CreateMemoryRequest, Kind.WRITE)
GET_MEMORY = Rpc(MG, "GetMemory", M.GetMemoryRequest, Kind.READ)
UPDATE_MEMORY = Rpc(MG, "UpdateMemory", M.UpdateMemoryRequest, Kind.WRITE)
DELETE_MEMORY = Rpc(MG, "DeleteMemory", M.DeleteMemoryRequest, Kind.WRITE)
LIST_MEMORIES = Rpc(MG, "ListMemories", M.ListMemoriesRequest, Kind.READ)
SEARCH_MEMORIES = Rpc(MG, "SearchMemories", M.SearchMemoriesRequest, Kind.READ)
DEDUPLICATE_MEMORIES = Rpc(MG, "DeduplicateMemories", M.DeduplicateMemoriesRequest, Kind.WRITE)
BATCH_CREATE_MEMORIES = Rpc(MG, "BatchCreateMemories", M.BatchCreateMemoriesRequest, Kind.WRITE)
BATCH_DELETE_MEMORIES = Rpc(MG, "BatchDeleteMemories", M.BatchDeleteMemoriesRequest, Kind.WRITE)

DELETE_USER = Rpc(UG, "DeleteUser", U.DeleteUserRequest, Kind.WRITE)
GET_USER_STATS = Rpc(UG, "GetUserStats", U.GetUserStatsRequest, Kind.READ)
EXPORT_USER = Rpc(UG, "ExportUser", U.ExportUserRequest, Kind.READ)

GET_STATUS = Rpc(AG, "GetStatus", A.GetStatusRequest, Kind.READ)
PROMOTE = Rpc(AG, "Promote", A.PromoteRequest, Kind.WRITE)
CHECKSUM = Rpc(AG, "Checksum", A.ChecksumRequest, Kind.READ)
GET_RETENTION_POLICY = Rpc(AG, "GetRetentionPolicy", A.GetRetentionPolicyRequest, Kind.READ)
SET_RETENTION_POLICY = Rpc(AG, "SetRetentionPolicy", A.SetRetentionPolicyRequest, Kind.WRITE)
BACKUP = Rpc(AG, "Backup", A.BackupRequest, Kind.READ)
HEALTH_CHECK = Rpc(_HealthStub, "Check", _pb.health.HealthCheckRequest, Kind.READ)


class _Namespace:
    def __init__(self, core: Any, tracker: Optional[LsnTracker] = None) -> None:
        self._c = core
        self._t = tracker

    def _u(self, rpc: Rpc, request: Any, fields: dict, timeout: Optional[float],
           metadata: Optional[Metadata]) -> Any:
        return self._c.unary(rpc, request, fields, tracker=self._t, timeout=timeout,
                             metadata=metadata)

    def _p(self, rpc: Rpc, items: str, request: Any, fields: dict, timeout: Optional[float],
           metadata: Optional[Metadata]) -> Any:
        return self._c.paged(rpc, items, request, fields, tracker=self._t, timeout=timeout,
                             metadata=metadata)


class Sessions(_Namespace):
    """SessionService: sessions (messages are in `messages`)."""

    def create_session(self, request: Optional[S.CreateSessionRequest] = None, /, *,
                       timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                       **fields: Any) -> S.Session:
        """Retried on UNAVAILABLE only when session.session_id is given."""
        return self._u(CREATE_SESSION, request, fields, timeout, metadata)

    def get_session(self, request: Optional[S.GetSessionRequest] = None, /, *,
                    timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                    **fields: Any) -> S.Session:
        return self._u(GET_SESSION, request, fields, timeout, metadata)

    def list_sessions(self, request: Optional[S.ListSessionsRequest] = None, /, *,
                      timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                      **fields: Any) -> Iterator[S.Session]:
        """Every matching session, page after page (timeout is per page)."""
        return self._p(LIST_SESSIONS, "sessions", request, fields, timeout, metadata)

    def list_sessions_page(self, request: Optional[S.ListSessionsRequest] = None, /, *,
                           timeout: Optional[float] = None,
                           metadata: Optional[Metadata] = None,
                           **fields: Any) -> S.ListSessionsResponse:
        return self._u(LIST_SESSIONS, request, fields, timeout, metadata)

    def end_session(self, request: Optional[S.EndSessionRequest] = None, /, *,
                    timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                    **fields: Any) -> S.Session:
        return self._u(END_SESSION, request, fields, timeout, metadata)

    def update_session(self, request: Optional[S.UpdateSessionRequest] = None, /, *,
                       timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                       **fields: Any) -> S.Session:
        return self._u(UPDATE_SESSION, request, fields, timeout, metadata)

    def delete_session(self, request: Optional[S.DeleteSessionRequest] = None, /, *,
                       timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                       **fields: Any) -> S.DeleteSessionResponse:
        return self._u(DELETE_SESSION, request, fields, timeout, metadata)

    def fork_session(self, request: Optional[S.ForkSessionRequest] = None, /, *,
                     timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                     **fields: Any) -> S.Session:
        """A new session holding messages 1..through_seq of session_id (and
        its summary if that covers no more). Retried on UNAVAILABLE only
        when new_session_id is given."""
        return self._u(FORK_SESSION, request, fields, timeout, metadata)


class Messages(_Namespace):
    """SessionService: messages, context and summaries."""

    def append_messages(self, request: Optional[S.AppendMessagesRequest] = None, /, *,
                        timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                        **fields: Any) -> S.AppendMessagesResponse:
        """Sends every message without a client_message_id with a random
        one, so the append is retried safely (the request passed is not
        changed: it can be reused for the next append)."""
        return self._u(APPEND_MESSAGES, request, fields, timeout, metadata)

    def list_messages(self, request: Optional[S.ListMessagesRequest] = None, /, *,
                      timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                      **fields: Any) -> Iterator[S.Message]:
        return self._p(LIST_MESSAGES, "messages", request, fields, timeout, metadata)

    def list_messages_page(self, request: Optional[S.ListMessagesRequest] = None, /, *,
                           timeout: Optional[float] = None,
                           metadata: Optional[Metadata] = None,
                           **fields: Any) -> S.ListMessagesResponse:
        return self._u(LIST_MESSAGES, request, fields, timeout, metadata)

    def search_messages(self, request: Optional[S.SearchMessagesRequest] = None, /, *,
                        timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                        **fields: Any) -> S.SearchMessagesResponse:
        """Keyword (BM25) and recency search over one user's messages, or
        the tenant's when user_id is empty; one page of results (pass its
        next_page_token as page_token for the next)."""
        return self._u(SEARCH_MESSAGES, request, fields, timeout, metadata)

    def get_context(self, request: Optional[S.GetContextRequest] = None, /, *,
                    timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                    **fields: Any) -> S.GetContextResponse:
        return self._u(GET_CONTEXT, request, fields, timeout, metadata)

    def update_summary(self, request: Optional[S.UpdateSummaryRequest] = None, /, *,
                       timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                       **fields: Any) -> S.Session:
        return self._u(UPDATE_SUMMARY, request, fields, timeout, metadata)


class Memories(_Namespace):
    """MemoryService."""

    def create_memory(self, request: Optional[M.CreateMemoryRequest] = None, /, *,
                      timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                      **fields: Any) -> M.CreateMemoryResponse:
        return self._u(CREATE_MEMORY, request, fields, timeout, metadata)

    def get_memory(self, request: Optional[M.GetMemoryRequest] = None, /, *,
                   timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                   **fields: Any) -> M.Memory:
        return self._u(GET_MEMORY, request, fields, timeout, metadata)

    def update_memory(self, request: Optional[M.UpdateMemoryRequest] = None, /, *,
                      timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                      **fields: Any) -> M.Memory:
        return self._u(UPDATE_MEMORY, request, fields, timeout, metadata)

    def delete_memory(self, request: Optional[M.DeleteMemoryRequest] = None, /, *,
                      timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                      **fields: Any) -> M.DeleteMemoryResponse:
        return self._u(DELETE_MEMORY, request, fields, timeout, metadata)

    def list_memories(self, request: Optional[M.ListMemoriesRequest] = None, /, *,
                      timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                      **fields: Any) -> Iterator[M.Memory]:
        return self._p(LIST_MEMORIES, "memories", request, fields, timeout, metadata)

    def list_memories_page(self, request: Optional[M.ListMemoriesRequest] = None, /, *,
                           timeout: Optional[float] = None,
                           metadata: Optional[Metadata] = None,
                           **fields: Any) -> M.ListMemoriesResponse:
        return self._u(LIST_MEMORIES, request, fields, timeout, metadata)

    def search_memories(self, request: Optional[M.SearchMemoriesRequest] = None, /, *,
                        timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                        **fields: Any) -> M.SearchMemoriesResponse:
        return self._u(SEARCH_MEMORIES, request, fields, timeout, metadata)

    def deduplicate_memories(self, request: Optional[M.DeduplicateMemoriesRequest] = None, /,
                             *, timeout: Optional[float] = None,
                             metadata: Optional[Metadata] = None,
                             **fields: Any) -> M.DeduplicateMemoriesResponse:
        return self._u(DEDUPLICATE_MEMORIES, request, fields, timeout, metadata)

    def batch_create_memories(self, request: Optional[M.BatchCreateMemoriesRequest] = None, /,
                              *, timeout: Optional[float] = None,
                              metadata: Optional[Metadata] = None,
                              **fields: Any) -> M.BatchCreateMemoriesResponse:
        """1 .. 100 CreateMemoryRequests in one write: results[i].status
        (code 0: OK) and .response per request; a failed one wrote nothing
        (no exception: check each status). Not retried, as CreateMemory."""
        return self._u(BATCH_CREATE_MEMORIES, request, fields, timeout, metadata)

    def batch_delete_memories(self, request: Optional[M.BatchDeleteMemoriesRequest] = None, /,
                              *, timeout: Optional[float] = None,
                              metadata: Optional[Metadata] = None,
                              **fields: Any) -> M.BatchDeleteMemoriesResponse:
        """1 .. 1000 memory_ids (each once; purge for all) in one write:
        results[i].status per id (NOT_FOUND for a missing one)."""
        return self._u(BATCH_DELETE_MEMORIES, request, fields, timeout, metadata)


class Users(_Namespace):
    """UserService."""

    def delete_user(self, request: Optional[U.DeleteUserRequest] = None, /, *,
                    timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                    **fields: Any) -> U.DeleteUserResponse:
        return self._u(DELETE_USER, request, fields, timeout, metadata)

    def get_user_stats(self, request: Optional[U.GetUserStatsRequest] = None, /, *,
                       timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                       **fields: Any) -> U.GetUserStatsResponse:
        return self._u(GET_USER_STATS, request, fields, timeout, metadata)

    def export_user(self, request: Optional[U.ExportUserRequest] = None, /, *,
                    timeout: Optional[float] = None, metadata: Optional[Metadata] = None,
                    **fields: Any) -> Iterator[U.ExportUserResponse]:
        """A stream (not retried); timeout (default: the client's
        stream_deadline, 1 h) bounds the whole export."""
        return self._c.stream(EXPORT_USER, request, fields, tracker=self._t,
                              timeout=timeout, metadata=metadata)


class Admin(_Namespace):
    """AdminService (an admin token) and grpc.health.v1 (any caller)."""

    def status(self, *, timeout: Optional[float] = None,
               metadata: Optional[Metadata] = None) -> A.GetStatusResponse:
        """GetStatus."""
        return self._u(GET_STATUS, None, {}, timeout, metadata)

    def health(self, service: str = "", *, timeout: Optional[float] = None,
               metadata: Optional[Metadata] = None) -> Any:
        """grpc.health.v1.Health/Check: a HealthCheckResponse (.status is
        SERVING, NOT_SERVING ...)."""
        return self._u(HEALTH_CHECK, None, {"service": service}, timeout, metadata)

    def promote(self, *, timeout: Optional[float] = None,
                metadata: Optional[Metadata] = None) -> A.PromoteResponse:
        return self._u(PROMOTE, None, {}, timeout, metadata)

    def checksum(self, *, timeout: Optional[float] = None,
                 metadata: Optional[Metadata] = None) -> A.ChecksumResponse:
        return self._u(CHECKSUM, None, {}, timeout, metadata)

    def get_retention_policy(self, *, timeout: Optional[float] = None,
                             metadata: Optional[Metadata] = None
                             ) -> A.GetRetentionPolicyResponse:
        return self._u(GET_RETENTION_POLICY, None, {}, timeout, metadata)

    def set_retention_policy(self, request: Optional[A.SetRetentionPolicyRequest] = None, /,
                             *, timeout: Optional[float] = None,
                             metadata: Optional[Metadata] = None,
                             **fields: Any) -> A.SetRetentionPolicyResponse:
        return self._u(SET_RETENTION_POLICY, request, fields, timeout, metadata)

    def backup(self, *, timeout: Optional[float] = None,
               metadata: Optional[Metadata] = None) -> Iterator[A.BackupChunk]:
        """A stream of chunks (not retried); timeout (default: the client's
        stream_deadline, 1 h) bounds the whole copy."""
        return self._c.stream(BACKUP, None, {}, tracker=self._t, timeout=timeout,
                              metadata=metadata)


class Session:
    """One session, by id: the session and message calls with session_id
    filled in. With consistency="session" it keeps its own LSN (its reads
    wait for its own writes only); otherwise it shares the client's."""

    def __init__(self, core: Any, session_id: str) -> None:
        self.session_id = session_id
        self._tracker = core.tracker_for_session()
        self._s = Sessions(core, self._tracker)
        self._m = Messages(core, self._tracker)

    @property
    def lsn(self) -> int:
        """The highest engram-lsn this object's reads wait for."""
        return self._tracker.lsn

    def reset_lsn(self) -> None:
        """Forgets the LSN this object's reads wait for (the client's, unless
        consistency="session"); see Engram.reset_lsn."""
        self._tracker.reset()

    def get(self, **kw: Any) -> S.Session:
        return self._s.get_session(session_id=self.session_id, **kw)

    def append(self, *messages: Any, timeout: Optional[float] = None,
               metadata: Optional[Metadata] = None, **fields: Any) -> S.AppendMessagesResponse:
        """messages: Message objects or dicts ({"role": "ROLE_USER",
        "content": "hi"}); fields: other request fields (expected_last_seq)."""
        return self._m.append_messages(session_id=self.session_id, messages=list(messages),
                                       timeout=timeout, metadata=metadata, **fields)

    def messages(self, **fields: Any) -> Iterator[S.Message]:
        return self._m.list_messages(session_id=self.session_id, **fields)

    def messages_page(self, **fields: Any) -> S.ListMessagesResponse:
        return self._m.list_messages_page(session_id=self.session_id, **fields)

    def context(self, **fields: Any) -> S.GetContextResponse:
        return self._m.get_context(session_id=self.session_id, **fields)

    def update_summary(self, summary: str, through_seq: int, **fields: Any) -> S.Session:
        return self._m.update_summary(session_id=self.session_id, summary=summary,
                                      through_seq=through_seq, **fields)

    def update(self, **fields: Any) -> S.Session:
        return self._s.update_session(session_id=self.session_id, **fields)

    def end(self, **fields: Any) -> S.Session:
        return self._s.end_session(session_id=self.session_id, **fields)

    def delete(self, **fields: Any) -> S.DeleteSessionResponse:
        return self._s.delete_session(session_id=self.session_id, **fields)

    def fork(self, through_seq: int, **fields: Any) -> S.Session:
        """fields: other request fields (new_session_id), timeout, metadata."""
        return self._s.fork_session(session_id=self.session_id, through_seq=through_seq,
                                    **fields)
