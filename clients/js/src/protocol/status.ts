/** Status codes (gRPC's numbers, PROTOCOL.md 5.4) and the error calls fail with. */

import type { Metadata } from "./metadata.js";

/** The 17 status codes by name. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** A status code's name, e.g. `"NOT_FOUND"`. */
export type CodeName = keyof typeof Code;

const names = Object.keys(Code) as CodeName[];

/** The name of a numeric code; codes above 16 read as `UNKNOWN` (PROTOCOL.md 5.4). */
export function codeName(code: number): CodeName {
  return names[code] ?? "UNKNOWN";
}

/** How a call ended, as STATUS carries it. */
export interface Status {
  readonly code: CodeName;
  readonly message: string;
  readonly details: Uint8Array;
  readonly trailers: Metadata;
  /**
   * Set only by this side, for a call the server announced it never
   * processed (above its GOAWAY's last id) or one the connection refused to
   * open (it never left): safe to send again. Never read from a peer's
   * status text.
   */
  readonly notProcessed?: boolean;
}

/** A call that ended with a status other than OK, or a connection that failed. */
export class ZrpcError extends Error {
  override readonly name = "ZrpcError";
  /** The status code's name. */
  readonly code: CodeName;
  /** Opaque details bytes (for example a serialized `google.rpc.Status`). */
  readonly details: Uint8Array;
  /** Trailing metadata sent with the status. */
  readonly trailers: Metadata;
  /** The call never reached the server's application (see {@link Status.notProcessed}): safe to send again. */
  readonly notProcessed: boolean;

  constructor(code: CodeName, message: string, details?: Uint8Array, trailers?: Metadata, notProcessed = false) {
    super(message === "" ? code : `${code}: ${message}`);
    this.code = code;
    this.rawMessage = message;
    this.details = details ?? new Uint8Array(0);
    this.trailers = trailers ?? [];
    this.notProcessed = notProcessed;
  }

  /** The status message without the code prefix. */
  readonly rawMessage: string;

  /** The error of a non-OK status. */
  static fromStatus(s: Status): ZrpcError {
    return new ZrpcError(s.code, s.message, s.details, s.trailers, s.notProcessed === true);
  }
}

/** A status with no details and no trailers. */
export function status(code: CodeName, message = ""): Status {
  return { code, message, details: new Uint8Array(0), trailers: [] };
}
