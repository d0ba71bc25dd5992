"""Engram's Python SDK: a typed client of engramd's gRPC API.

    from engram import Engram
    with Engram("127.0.0.1:50051") as client:
        s = client.sessions.create_session(session={"user_id": "u1"})
        client.messages.append_messages(session_id=s.session_id,
                                        messages=[{"role": "ROLE_USER", "content": "hi"}])

The generated messages are in engram.v1 (session_pb2, memory_pb2, ...).
"""
# The generated engram.v1 modules may live in another sys.path entry than
# this file (a build dir when run from the repository): let engram.* span both.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from engram._client import AsyncEngram, Engram  # noqa: E402
from engram._api import Session  # noqa: E402
from engram._errors import (AbortedError, AlreadyExistsError, CancelledError,  # noqa: E402
                            DataLossError, DeadlineExceededError, EngramError,
                            FailedPreconditionError, FieldViolation, InternalError,
                            InvalidArgumentError, NotFoundError, OutOfRangeError,
                            PermissionDeniedError, ResourceExhaustedError,
                            UnauthenticatedError, UnavailableError, UnimplementedError,
                            UnknownError)

__version__ = "0.16.0"

__all__ = ["Engram", "AsyncEngram", "Session", "EngramError", "FieldViolation",
           "AbortedError", "AlreadyExistsError", "CancelledError", "DataLossError",
           "DeadlineExceededError", "FailedPreconditionError", "InternalError",
           "InvalidArgumentError", "NotFoundError", "OutOfRangeError",
           "PermissionDeniedError", "ResourceExhaustedError", "UnauthenticatedError",
           "UnavailableError", "UnimplementedError", "UnknownError"]
