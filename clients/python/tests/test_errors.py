"""EngramError's parsing of grpc-status-details-bin (section "Errors" of
the README): a google.rpc.Status built here, as engramd builds it."""
import unittest

import grpc
from google.protobuf import any_pb2, duration_pb2

import _support  # noqa: F401  (sys.path)
import engram
from engram import _errors, _pb


def packed(msg):
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def status_bin(code, message, *details):
    return _pb.status.Status(code=code, message=message,
                             details=[packed(d) for d in details]).SerializeToString()


class ParseTest(unittest.TestCase):
    def test_every_detail(self):
        ed = _pb.error_details
        raw = status_bin(3, "session.user_id: required",
                         ed.ErrorInfo(reason="INVALID_ARGUMENT", domain="engram.v1",
                                      metadata={"k": "v"}),
                         ed.BadRequest(field_violations=[ed.BadRequest.FieldViolation(
                             field="session.user_id", description="required")]),
                         ed.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1,
                                                                         nanos=500000000)),
                         ed.RequestInfo(request_id="00ff"))
        e = _errors.from_status(grpc.StatusCode.INVALID_ARGUMENT, "session.user_id: required",
                                [("grpc-status-details-bin", raw),
                                 ("engram-request-id", "00ff")])
        self.assertIsInstance(e, engram.InvalidArgumentError)
        self.assertEqual((e.code, e.message), (grpc.StatusCode.INVALID_ARGUMENT,
                                               "session.user_id: required"))
        self.assertEqual((e.reason, e.domain, e.metadata), ("INVALID_ARGUMENT", "engram.v1",
                                                            {"k": "v"}))
        self.assertEqual(e.field_violations,
                         [engram.FieldViolation("session.user_id", "required")])
        self.assertEqual(e.retry_delay, 1.5)
        self.assertEqual(e.request_id, "00ff")

    def test_request_id_from_trailer_alone_and_no_details(self):
        e = _errors.from_status(grpc.StatusCode.UNAVAILABLE, "busy",
                                [("engram-request-id", "abc")])
        self.assertIsInstance(e, engram.UnavailableError)
        self.assertEqual((e.reason, e.request_id, e.retry_delay, e.field_violations),
                         ("", "abc", None, []))

    def test_garbled_details_keep_code_and_message(self):
        e = _errors.from_status(grpc.StatusCode.NOT_FOUND, "session x: not found",
                                [("grpc-status-details-bin", b"\xff\xff\xff")])
        self.assertIsInstance(e, engram.NotFoundError)
        self.assertEqual((e.message, e.reason), ("session x: not found", ""))

    def test_garbled_inner_detail_is_skipped(self):
        """An Any whose value does not parse is left out; the status, and
        the details that do parse, stay."""
        ed = _pb.error_details
        bad = any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff")
        raw = _pb.status.Status(code=14, message="x", details=[
            bad, packed(ed.RequestInfo(request_id="beef"))]).SerializeToString()
        e = _errors.from_status(grpc.StatusCode.UNAVAILABLE, "x",
                                [("grpc-status-details-bin", raw)])
        self.assertIsInstance(e, engram.UnavailableError)
        self.assertEqual((e.message, e.reason, e.request_id), ("x", "", "beef"))
