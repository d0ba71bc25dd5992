"""The generated modules the SDK uses, in one place.

engram.v1.* is generated into this package at build (gen_protos.py). The
google.rpc and grpc.health.v1 messages come from googleapis-common-protos and
grpcio-health-checking when those are installed (so a program that uses them
too shares one descriptor pool entry), else from the SDK's private copies in
engram._ext, which shadow nothing.
"""
from engram.v1 import admin_pb2 as admin
from engram.v1 import admin_pb2_grpc as admin_grpc
from engram.v1 import memory_pb2 as memory
from engram.v1 import memory_pb2_grpc as memory_grpc
from engram.v1 import session_pb2 as session
from engram.v1 import session_pb2_grpc as session_grpc
from engram.v1 import user_pb2 as user
from engram.v1 import user_pb2_grpc as user_grpc

try:
    from google.rpc import error_details_pb2 as error_details
    from google.rpc import status_pb2 as status
except ImportError:
    from engram._ext import error_details_pb2 as error_details  # type: ignore[no-redef]
    from engram._ext import status_pb2 as status  # type: ignore[no-redef]

try:
    from grpc_health.v1 import health_pb2 as health
except ImportError:
    from engram._ext import health_pb2 as health  # type: ignore[no-redef]

__all__ = ["admin", "admin_grpc", "memory", "memory_grpc", "session", "session_grpc", "user",
           "user_grpc", "error_details", "status", "health"]
