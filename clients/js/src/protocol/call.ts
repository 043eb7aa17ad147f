/**
 * One call's rules: its send half (credit, queue, fragmentation) and its
 * receive half (credit granted, reassembly, message counts). The
 * connection routes frames to these and turns their verdicts into frames
 * and events.
 */

import type { Config } from "./config.js";
import type { CallKind } from "./frame.js";
import type { Status } from "./status.js";

/** Which end of the call this side is. */
export type Role = "caller" | "responder";

/** Whether a kind carries exactly one message in a direction. */
export function singleRequest(kind: CallKind): boolean {
  return kind === "unary" || kind === "server_streaming";
}
/** Whether a kind carries exactly one response message. */
export function singleResponse(kind: CallKind): boolean {
  return kind === "unary" || kind === "client_streaming";
}

/** A message waiting to be sent, with how much of it has gone out. */
interface Outgoing {
  data: Uint8Array;
  sent: number;
}

/**
 * The send half: `open` accepts messages; `ending` has its end queued
 * (END_STREAM on the last message or a HALF_CLOSE); `done` sends nothing more.
 */
export type SendState = "open" | "ending" | "done";

/** What the send half puts on the wire next. */
export type NextFrame = { type: "message"; payload: Uint8Array; more: boolean; end: boolean } | { type: "half-close" } | undefined;

export class SendHalf {
  state: SendState = "open";
  /** Messages the peer still accepts (its credit). */
  credit: number;
  /** Bytes queued and not yet framed. */
  queuedBytes = 0;
  private readonly queue: Outgoing[] = [];
  /** The end goes out as END_STREAM on the last message or alone (caller only). */
  private endQueued = false;

  constructor(credit: number) {
    this.credit = credit;
  }

  get queuedMessages(): number {
    return this.queue.length;
  }

  push(data: Uint8Array, end: boolean): void {
    this.queue.push({ data, sent: 0 });
    this.queuedBytes += data.length;
    if (end) this.end();
  }

  end(): void {
    this.endQueued = true;
    this.state = "ending";
  }

  /** Payload bytes of the next MESSAGE frame under `maxFragment` (0 if none). */
  nextLength(maxFragment: number): number {
    const head = this.queue[0];
    return head === undefined ? 0 : Math.min(maxFragment, head.data.length - head.sent);
  }

  /** Whether a frame can go out now. */
  ready(): boolean {
    const head = this.queue[0];
    if (head !== undefined) return head.sent > 0 || this.credit > 0;
    return this.endQueued && this.state === "ending";
  }

  /**
   * The next frame: a fragment of at most `maxFragment` bytes of the head
   * message (taking one credit when it starts a message), or the lone end.
   * `endFlag` says whether the end may ride on the last message (callers).
   */
  next(maxFragment: number, endFlag: boolean): NextFrame {
    const head = this.queue[0];
    if (head === undefined) {
      if (this.endQueued && this.state === "ending") {
        this.state = "done";
        return endFlag ? { type: "half-close" } : undefined;
      }
      return undefined;
    }
    if (head.sent === 0) {
      if (this.credit === 0) return undefined;
      this.credit -= 1;
    }
    const n = Math.min(maxFragment, head.data.length - head.sent);
    const payload = head.data.subarray(head.sent, head.sent + n);
    head.sent += n;
    this.queuedBytes -= n;
    const more = head.sent < head.data.length;
    let end = false;
    if (!more) {
      this.queue.shift();
      if (this.queue.length === 0 && this.endQueued && endFlag) {
        end = true;
        this.state = "done";
      }
    }
    return { type: "message", payload, more, end };
  }

  /** Drops everything queued; returns the bytes released. */
  clear(): number {
    const n = this.queuedBytes;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.state = "done";
    return n;
  }
}

/** The receive half: `open` until the peer's end (caller's half-close, or STATUS). */
export class RecvHalf {
  open = true;
  /** Credit granted to the peer and not used yet. */
  credit: number;
  /** The window: credit is topped up toward it as messages are consumed. */
  window: number;
  /** Consumed messages whose credit is not returned yet. */
  private pendingGrant = 0;
  /** Whole messages received. */
  received = 0;
  /** Delivered and not consumed: count and bytes. */
  unreadMessages = 0;
  unreadBytes = 0;
  /** Fragments of the message being reassembled. */
  partial: Uint8Array[] | undefined;
  partialBytes = 0;
  /** Bytes of all messages received (for the window's average size). */
  private totalBytes = 0;

  constructor(credit: number) {
    this.credit = credit;
    this.window = Math.max(credit, 1);
  }

  /** Bytes held: unread messages and the partial one. */
  get held(): number {
    return this.unreadBytes + this.partialBytes;
  }

  delivered(bytes: number): void {
    this.received += 1;
    this.unreadMessages += 1;
    this.unreadBytes += bytes;
    this.totalBytes += bytes;
  }

  /**
   * The application consumed a message of `bytes`; returns the credit to
   * grant now (0: not yet). Grants come in batches of half the window, and
   * the window doubles while its messages are small.
   */
  consume(bytes: number, config: Config): number {
    if (this.unreadMessages === 0) return 0;
    this.unreadMessages -= 1;
    this.unreadBytes -= Math.min(bytes, this.unreadBytes);
    if (!this.open) return 0;
    this.pendingGrant += 1;
    if (this.pendingGrant < Math.max(1, this.window >> 1)) return 0;
    let grant = this.pendingGrant;
    this.pendingGrant = 0;
    const avg = this.received > 0 ? this.totalBytes / this.received : 0;
    if (this.window < config.maxCallWindow && avg * this.window * 2 <= config.callWindowBytes) {
      grant += this.window;
      this.window *= 2;
    }
    this.credit += grant;
    return grant;
  }
}

/** One live call. */
export class Call {
  /** Response headers: received (caller) or sent (responder). */
  headersDone = false;
  /** Absolute deadline in ms of the connection's clock. */
  deadline: number | undefined;
  /** The STATUS a responder sends once its queued messages are out. */
  pendingStatus: Status | undefined;
  readonly send: SendHalf;
  readonly recv: RecvHalf;

  constructor(
    readonly id: number,
    readonly role: Role,
    readonly kind: CallKind,
    sendCredit: number,
    recvCredit: number,
  ) {
    this.send = new SendHalf(sendCredit);
    this.recv = new RecvHalf(recvCredit);
  }

  /** Whether the next received message breaks the kind's message count. */
  tooManyReceived(): boolean {
    const single = this.role === "caller" ? singleResponse(this.kind) : singleRequest(this.kind);
    return single && this.recv.received >= 1;
  }
}
