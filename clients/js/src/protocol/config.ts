/** The limits and timings of one connection, with their defaults. */

import type { Settings } from "./frame.js";

/** Limits this side states in SETTINGS and enforces on what it receives. */
export interface Limits {
  /** Largest message accepted after reassembly, bytes (4 MiB). */
  maxMessageSize: number;
  /** Calls the server may have open toward this side at once (1,024). */
  maxConcurrentStreams: number;
  /** Credit each call the server opens starts with, messages (16). */
  initialCredit: number;
  /** Largest MESSAGE frame payload accepted, bytes (64 KiB). */
  maxFragmentSize: number;
  /** Largest metadata block, or STATUS, accepted, bytes (16 KiB). */
  maxMetadataSize: number;
  /** Largest BATCH payload accepted, bytes (16 KiB; 0 turns BATCH off). */
  maxBatchSize: number;
  /**
   * Longest resume cursor accepted on a server stream's responses, bytes
   * (64; 0 to 255; 0 offers none and the server's streams cannot be resumed).
   */
  maxCursorSize: number;
}

/** Everything the protocol state machine is configured with. */
export interface Config extends Limits {
  /** Response credit a call this side opens starts with, messages (16). */
  callCredit: number;
  /**
   * Byte budget of a call's receive window (1 MiB): as messages are
   * consumed the window grows toward this budget divided by the message's
   * size, at most 16,384 messages; 0 keeps the window at its initial credit.
   */
  callWindowBytes: number;
  /** Received bytes held for the application over all calls (64 MiB). */
  maxConnectionBuffer: number;
  /** Bytes queued to send on one call before `canSend` says wait (1 MiB). */
  maxCallSendBuffer: number;
  /** Bytes queued to send on the connection before `canSend` says wait (4 MiB). */
  maxConnectionSendBuffer: number;
  /**
   * Offer gzip (PROTOCOL.md 3.4): the server may then send COMPRESSED
   * messages, which the client inflates (DecompressionStream) before this
   * module sees them, at most to the largest message it accepts (true).
   */
  acceptGzip: boolean;
  /** PING after this many ms without a frame from the peer; 0 turns keepalive off (30 s). */
  keepaliveIntervalMs: number;
  /** Close with 4000 when a PING is not answered in this many ms (20 s). */
  keepaliveTimeoutMs: number;
  /** Control replies (PING ACKs) queued before the peer counts as not reading (1,024). */
  maxPendingControl: number;
}

/** The defaults of PROTOCOL.md 9.1, as a peer that sent no SETTINGS has them. */
export const PROTOCOL_DEFAULTS: Limits = {
  maxMessageSize: 4 * 1024 * 1024,
  maxConcurrentStreams: 1024,
  initialCredit: 16,
  maxFragmentSize: 64 * 1024,
  maxMetadataSize: 16 * 1024,
  maxBatchSize: 0,
  maxCursorSize: 0,
};

/** This package's defaults. */
export const DEFAULT_CONFIG: Config = {
  ...PROTOCOL_DEFAULTS,
  maxBatchSize: 16 * 1024,
  maxCursorSize: 64,
  callCredit: 16,
  callWindowBytes: 1024 * 1024,
  maxConnectionBuffer: 64 * 1024 * 1024,
  maxCallSendBuffer: 1024 * 1024,
  maxConnectionSendBuffer: 4 * 1024 * 1024,
  acceptGzip: true,
  keepaliveIntervalMs: 30_000,
  keepaliveTimeoutMs: 20_000,
  maxPendingControl: 1024,
};

/** Why a SETTINGS value is refused (PROTOCOL.md 9.1's valid values). */
export function checkSettings(s: Settings): string | undefined {
  const bad = (name: string) => `SETTINGS ${name} out of range`;
  if (s.maxMessageSize !== undefined && s.maxMessageSize < 1) return bad("MAX_MESSAGE_SIZE");
  if (s.initialCredit !== undefined && (s.initialCredit < 1 || s.initialCredit > 0x7fffffff)) return bad("INITIAL_CREDIT");
  if (s.maxFragmentSize !== undefined && s.maxFragmentSize < 1024) return bad("MAX_FRAGMENT_SIZE");
  if (s.maxMetadataSize !== undefined && s.maxMetadataSize < 256) return bad("MAX_METADATA_SIZE");
  if (s.maxBatchSize !== undefined && s.maxBatchSize !== 0 && s.maxBatchSize < 1024) return bad("MAX_BATCH_SIZE");
  if (s.maxCursorSize !== undefined && s.maxCursorSize > 255) return bad("MAX_CURSOR_SIZE");
  return undefined;
}

/** The largest WebSocket message that can be valid under `l` (PROTOCOL.md 3.2). */
export function maxWebSocketMessage(l: Limits): number {
  return 6 + Math.max(l.maxFragmentSize, l.maxMetadataSize + 1040, l.maxBatchSize);
}
