"""EngramError: a failed call, with the details engramd sends in the
trailing metadata entry grpc-status-details-bin (a google.rpc.Status whose
details hold ErrorInfo, BadRequest, RetryInfo and RequestInfo)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import grpc
from google.protobuf.message import DecodeError

from engram import _pb

DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "engram-request-id"


@dataclass(frozen=True)
class FieldViolation:
    """One entry of google.rpc.BadRequest: the request field (snake_case path
    such as "session.user_id" or "messages[2].content") and its problem."""
    field: str
    description: str


class EngramError(Exception):
    """A call that ended with a non-OK status.

    code: grpc.StatusCode; message: the status message; reason: ErrorInfo's
    UPPER_SNAKE reason ("" when the server sent none); domain and metadata:
    ErrorInfo's; field_violations: BadRequest's; retry_delay: RetryInfo's
    delay in seconds (None when retrying makes no sense); request_id: the
    server's id of the call, to find it in its log ("" when absent);
    last_error: on a DEADLINE_EXCEEDED that ended a retried call, the error
    of the attempt before (also its __cause__ and in its str()), which
    says why the retries did not succeed; else None."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "",
                 domain: str = "", metadata: Optional[Dict[str, str]] = None,
                 field_violations: Sequence[FieldViolation] = (),
                 retry_delay: Optional[float] = None, request_id: str = "") -> None:
        super().__init__("%s: %s" % (code.name, message))
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.field_violations: List[FieldViolation] = list(field_violations)
        self.retry_delay = retry_delay
        self.request_id = request_id
        self.last_error: Optional[EngramError] = None

    def __str__(self) -> str:
        s = "%s: %s" % (self.code.name, self.message)
        if self.last_error is not None:
            s += " (after retries; the attempt before failed with %s)" % self.last_error
        return s


class CancelledError(EngramError): pass
class UnknownError(EngramError): pass
class InvalidArgumentError(EngramError): pass
class DeadlineExceededError(EngramError): pass
class NotFoundError(EngramError): pass
class AlreadyExistsError(EngramError): pass
class PermissionDeniedError(EngramError): pass
class ResourceExhaustedError(EngramError): pass
class FailedPreconditionError(EngramError): pass
class AbortedError(EngramError): pass
class OutOfRangeError(EngramError): pass
class UnimplementedError(EngramError): pass
class InternalError(EngramError): pass
class UnavailableError(EngramError): pass
class DataLossError(EngramError): pass
class UnauthenticatedError(EngramError): pass


_BY_CODE: Dict[grpc.StatusCode, Type[EngramError]] = {
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNKNOWN: UnknownError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}

Metadata = Sequence[Tuple[str, Any]]


def from_status(code: grpc.StatusCode, message: str, trailers: Optional[Metadata]) -> EngramError:
    """The EngramError subclass for code, with the details parsed from
    trailers (a google.rpc.Status that does not parse is ignored: the code
    and message are still right)."""
    kw: Dict[str, Any] = {}
    raw = None
    for k, v in trailers or ():
        if k == DETAILS_KEY:
            raw = v
        elif k == REQUEST_ID_KEY:
            kw["request_id"] = v.decode() if isinstance(v, bytes) else v
    if raw is not None:
        st = _pb.status.Status()
        try:
            st.ParseFromString(raw)
        except Exception:  # a garbled trailer must not hide the status itself
            st = _pb.status.Status()
        _parse_details(st, kw)
    cls = _BY_CODE.get(code, EngramError)
    return cls(code, message, **kw)


def _parse_details(st: Any, kw: Dict[str, Any]) -> None:
    ed = _pb.error_details
    for any_ in st.details:
        for cls in (ed.ErrorInfo, ed.BadRequest, ed.RetryInfo, ed.RequestInfo):
            if any_.Is(cls.DESCRIPTOR):
                d = cls()
                try:
                    any_.Unpack(d)
                except DecodeError:  # a garbled detail is skipped, like a garbled trailer
                    break
                _take_detail(d, kw)
                break


def _take_detail(d: Any, kw: Dict[str, Any]) -> None:
    ed = _pb.error_details
    if isinstance(d, ed.ErrorInfo):
        kw.update(reason=d.reason, domain=d.domain, metadata=dict(d.metadata))
    elif isinstance(d, ed.BadRequest):
        kw["field_violations"] = [FieldViolation(v.field, v.description)
                                  for v in d.field_violations]
    elif isinstance(d, ed.RetryInfo):
        kw["retry_delay"] = d.retry_delay.seconds + d.retry_delay.nanos / 1e9
    else:
        kw["request_id"] = d.request_id


def from_rpc_error(e: grpc.RpcError) -> EngramError:
    """Converts what a grpc call raised (a grpc.Call / grpc.aio.AioRpcError)."""
    code = e.code()  # type: ignore[attr-defined]
    details = e.details() or ""  # type: ignore[attr-defined]
    trailers = e.trailing_metadata()  # type: ignore[attr-defined]
    return from_status(code, details, trailers)
