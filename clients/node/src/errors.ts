// EngramError: a failed call as engramd described it. engramd puts a
// google.rpc.Status in the trailer grpc-status-details-bin (Connect decodes
// it into ConnectError.details; a detail that does not parse is skipped
// there, so a malformed one never hides the error itself).
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RequestInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

export { Code };

export interface FieldViolation {
  /** The request field, snake_case with dots and [i], e.g. "memory.text". */
  field: string;
  description: string;
}

export class EngramError extends Error {
  override name = "EngramError";
  /** The gRPC status code (Code.NotFound, Code.InvalidArgument, ...). */
  readonly code: Code;
  /** The server's message (grpc-message), without the code prefix. */
  readonly rawMessage: string;
  /** ErrorInfo.reason, UPPER_SNAKE (e.g. "NOT_FOUND", "QUOTA_EXCEEDED"); "" when absent. */
  readonly reason: string;
  /** ErrorInfo.domain ("engram.v1"); "" when absent. */
  readonly domain: string;
  /** ErrorInfo.metadata. */
  readonly errorMetadata: Record<string, string>;
  /** BadRequest.field_violations (INVALID_ARGUMENT). */
  readonly fieldViolations: FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds, where retrying makes sense; undefined otherwise. */
  readonly retryDelayMs: number | undefined;
  /** RequestInfo.request_id, or the engram-request-id trailer; "" when absent. */
  readonly requestId: string;
  /** Trailers (and headers of a trailers-only reply). */
  readonly metadata: Headers;
  /**
   * On a DEADLINE_EXCEEDED that ended a retried call: the error of the
   * attempt before (e.g. UNAVAILABLE "engram-min-lsn 21 not applied"), which
   * says why the retries failed; also in `message`. Undefined otherwise.
   */
  lastError: EngramError | undefined;

  constructor(cause: ConnectError) {
    super(`${Code[cause.code] ?? cause.code}: ${cause.rawMessage}`, { cause });
    this.code = cause.code;
    this.rawMessage = cause.rawMessage;
    this.metadata = cause.metadata;
    const info = cause.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.errorMetadata = { ...(info?.metadata ?? {}) };
    this.fieldViolations = cause.findDetails(BadRequestSchema).flatMap((b) =>
      b.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
    );
    const retry = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      retry === undefined ? undefined : Number(retry.seconds) * 1000 + Math.floor(retry.nanos / 1e6);
    this.requestId =
      cause.findDetails(RequestInfoSchema)[0]?.requestId || cause.metadata.get("engram-request-id") || "";
  }

  /**
   * What a call that will not be retried again throws: err. When err is a
   * DEADLINE_EXCEEDED after retries it carries last as its lastError: the
   * code stays the one a caller checks for "too slow", and the earlier
   * error still says why. A DEADLINE_EXCEEDED sent by the server keeps its
   * own message ("the write may have been applied there" is not the
   * earlier "not acknowledged; retry").
   */
  static givingUp(err: EngramError, last: EngramError | undefined): EngramError {
    if (last === undefined || err.code !== Code.DeadlineExceeded) return err;
    err.lastError = last;
    err.message += ` (after retries; the attempt before failed with ${last.message})`;
    return err;
  }

  /** Any thrown value as an EngramError (transport failures become UNKNOWN/UNAVAILABLE as Connect says). */
  static from(e: unknown): EngramError {
    if (e instanceof EngramError) return e;
    return new EngramError(ConnectError.from(e));
  }

  get isNotFound(): boolean {
    return this.code === Code.NotFound;
  }
  get isInvalidArgument(): boolean {
    return this.code === Code.InvalidArgument;
  }
  get isUnavailable(): boolean {
    return this.code === Code.Unavailable;
  }
}

