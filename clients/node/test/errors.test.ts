// EngramError from a trailer as engramd sends it (grpc-status-details-bin:
// a google.rpc.Status with ErrorInfo, BadRequest, RetryInfo, RequestInfo),
// decoded by Connect's own gRPC trailer reader.
import assert from "node:assert/strict";
import { it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
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
