// EngramError from a trailer as engramd sends it (grpc-status-details-bin:
// a google.rpc.Status with ErrorInfo, BadRequest, RetryInfo, RequestInfo),
// decoded by Connect's own gRPC trailer reader.
import assert from "node:assert/strict";
import { it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { Code, EngramError } from "../src/index.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RequestInfoSchema,
  RetryInfoSchema,
} from "../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";

function trailer(status: Parameters<typeof create<typeof StatusSchema>>[1], extra: Record<string, string> = {}) {
  const bin = Buffer.from(toBinary(StatusSchema, create(StatusSchema, status))).toString("base64");
  return new Headers({ "grpc-status": String(status!.code), "grpc-message": encodeURIComponent(status!.message ?? ""),
    "grpc-status-details-bin": bin, ...extra });
}

it("parses ErrorInfo, BadRequest, RequestInfo", () => {
  const h = trailer({
    code: Code.InvalidArgument,
    message: "memory.text: required",
    details: [
      anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "INVALID_ARGUMENT", domain: "engram.v1", metadata: { a: "b" } })),
      anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [{ field: "memory.text", description: "required" }] })),
      anyPack(RequestInfoSchema, create(RequestInfoSchema, { requestId: "0123abcd" })),
    ],
  });
  const err = new EngramError(findTrailerError(h)!);
  assert.equal(err.code, Code.InvalidArgument);
  assert.equal(err.rawMessage, "memory.text: required");
  assert.equal(err.reason, "INVALID_ARGUMENT");
  assert.equal(err.domain, "engram.v1");
  assert.deepEqual(err.errorMetadata, { a: "b" });
  assert.deepEqual(err.fieldViolations, [{ field: "memory.text", description: "required" }]);
  assert.equal(err.requestId, "0123abcd");
  assert.equal(err.retryDelayMs, undefined);
  assert.equal(err.isInvalidArgument, true);
});

it("parses RetryInfo's delay; the request id falls back to the engram-request-id trailer", () => {
  const h = trailer({
    code: Code.Unavailable,
    message: "server busy",
    details: [
      anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "SERVER_BUSY", domain: "engram.v1" })),
      anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: { seconds: 1n, nanos: 250_000_000 } })),
    ],
  }, { "engram-request-id": "ff00" });
  const err = new EngramError(findTrailerError(h)!);
  assert.equal(err.reason, "SERVER_BUSY");
  assert.equal(err.retryDelayMs, 1250);
  assert.equal(err.requestId, "ff00");
  assert.equal(err.isUnavailable, true);
});

it("a status without details still makes an EngramError", () => {
  const err = new EngramError(findTrailerError(new Headers({ "grpc-status": "5", "grpc-message": "no%20session" }))!);
  assert.equal(err.code, Code.NotFound);
  assert.equal(err.rawMessage, "no session");
  assert.equal(err.reason, "");
  assert.deepEqual(err.fieldViolations, []);
});

it("the deadline ending a retried call stays DEADLINE_EXCEEDED, carrying the last error", () => {
  // A caller that checks code === DeadlineExceeded to tell "too slow" from
  // "down" still matches; lastError says why the retries failed.
  const last = new EngramError(findTrailerError(trailer({ code: Code.Unavailable,
    message: "engram-min-lsn 21 not applied on this node yet",
    details: [anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: { seconds: 1n } }))] }))!);
  const deadline = new EngramError(new ConnectError("the operation timed out", Code.DeadlineExceeded));
  const err = EngramError.givingUp(deadline, last);
  assert.equal(err, deadline);
  assert.equal(err.code, Code.DeadlineExceeded);
  assert.equal(err.lastError, last);
  assert.match(err.message, /engram-min-lsn 21 not applied/);
  assert.equal(err.retryDelayMs, undefined, "the last error's RetryInfo is not the call's");

  // engramd's own DEADLINE_EXCEEDED keeps its message (not the earlier "retry").
  const own = new EngramError(findTrailerError(trailer({ code: Code.DeadlineExceeded,
    message: "the deadline passed before the primary answered; the write may have been applied there" },
  { "engram-request-id": "cd34" }))!);
  const relayed = EngramError.givingUp(own, last);
  assert.equal(relayed, own);
  assert.match(relayed.rawMessage, /may have been applied/);
  assert.equal(relayed.requestId, "cd34");

  const first = new EngramError(new ConnectError("timed out", Code.DeadlineExceeded));
  assert.equal(EngramError.givingUp(first, undefined).lastError, undefined);
  const nf = new EngramError(new ConnectError("no session", Code.NotFound));
  assert.equal(EngramError.givingUp(nf, last), nf);
  assert.equal(nf.lastError, undefined);
});
