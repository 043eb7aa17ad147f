/**
 * One call's rules: its send half (credit, queue, fragmentation) and its
 * receive half (credit granted, reassembly, message counts). The
 * connection routes frames to these and turns their verdicts into frames
 * and events.
 */

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
  /** It ends with its resume cursor trailer (5.6), which its last fragment carries whole. */
  stamped: boolean;
}

/**
 * The send half: `open` accepts messages; `ending` has its end queued
 * (END_STREAM on the last message or a HALF_CLOSE); `done` sends nothing more.
 */
export type SendState = "open" | "ending" | "done";

/** What the send half puts on the wire next. */
export type NextFrame =
  | { type: "message"; payload: Uint8Array; more: boolean; end: boolean; cursor: boolean }
  | { type: "half-close" }
  | undefined;

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

  /** Admits a message: it takes one credit now (the caller checked there is one). */
  push(data: Uint8Array, end: boolean, stamped = false): void {
    this.credit -= 1;
    this.queue.push({ data, sent: 0, stamped });
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
    return head === undefined ? 0 : fragmentLength(head, maxFragment);
  }

  /** Whether a frame can go out now. */
  ready(): boolean {
    if (this.queue.length > 0) return true;
    return this.endQueued && this.state === "ending";
  }

  /**
   * The next frame: a fragment of at most `maxFragment` bytes of the head
   * message (its credit was taken when it was admitted), or the lone end.
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
    const n = fragmentLength(head, maxFragment);
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
    return { type: "message", payload, more, end, cursor: !more && head.stamped };
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

/**
 * Bytes of `m`'s next fragment: at most `maxFragment`, and never cutting a
 * cursor trailer (the cursor and its length byte, the last), which the last
 * fragment carries whole: the same split as the Rust core's.
 */
function fragmentLength(m: Outgoing, maxFragment: number): number {
  const rest = m.data.length - m.sent;
  if (rest <= maxFragment) return rest;
  const trailer = m.stamped ? (m.data[m.data.length - 1] as number) + 1 : 0;
  return Math.min(maxFragment, rest - trailer);
}

/** What one received MESSAGE frame does to the receive half. */
export type Fragment =
  /** A whole message: deliver it. */
  | { type: "message"; data: Uint8Array }
  /** A fragment was kept; more follow. */
  | { type: "partial"; bytes: number }
  /** A fault confined to the call: it ends with this status. */
  | { type: "call-fault"; code: "INTERNAL" | "RESOURCE_EXHAUSTED"; message: string }
  /** A protocol violation that ends the connection (1002). */
  | { type: "connection-fault"; message: string };

/** Most messages a call's receive window grows to (PROTOCOL.md 6). */
export const MAX_AUTO_WINDOW = 16 * 1024;

/** The receive half: `open` until the peer's end (caller's half-close, or STATUS). */
export class RecvHalf {
  #open = true;
  /** Credit granted to the peer and not used yet. */
  #credit: number;
  /** The window: credit is topped up toward it as messages are consumed. */
  #window: number;
  /** Consumed messages whose credit is not returned yet. */
  #toGrant = 0;
  /** Whole messages received. */
  #received = 0;
  /** Delivered and not consumed: count and bytes. */
  #unreadMessages = 0;
  #unreadBytes = 0;
  /** Fragments of the message being reassembled. */
  #partial: Uint8Array[] | undefined;
  #partialBytes = 0;

  constructor(credit: number) {
    this.#credit = credit;
    this.#window = credit;
  }

  get open(): boolean {
    return this.#open;
  }
  get window(): number {
    return this.#window;
  }
  get received(): number {
    return this.#received;
  }

  /** Bytes held: unread messages and the partial one. */
  get held(): number {
    return this.#unreadBytes + this.#partialBytes;
  }

  /** One MESSAGE frame's payload. `single`: the peer may send one message only. */
  onFragment(payload: Uint8Array, more: boolean, single: boolean, maxMessage: number): Fragment {
    if (!this.#open) return { type: "call-fault", code: "INTERNAL", message: "message after half-close" };
    if (this.#partial === undefined) {
      if (this.#credit === 0) return { type: "connection-fault", message: "message beyond the granted credit" };
      this.#credit -= 1;
      if (single && this.#received >= 1) {
        return { type: "call-fault", code: "INTERNAL", message: "more than one message for this call kind" };
      }
    }
    if (this.#partialBytes + payload.length > maxMessage) {
      return { type: "call-fault", code: "RESOURCE_EXHAUSTED", message: `message larger than the limit of ${maxMessage} bytes` };
    }
    if (more) {
      // Copied: the WebSocket's buffer may be reused; the copy is what is held.
      this.#partial ??= [];
      this.#partial.push(payload.slice());
      this.#partialBytes += payload.length;
      return { type: "partial", bytes: payload.length };
    }
    let data = payload;
    if (this.#partial !== undefined) {
      data = new Uint8Array(this.#partialBytes + payload.length);
      let at = 0;
      for (const p of this.#partial) {
        data.set(p, at);
        at += p.length;
      }
      data.set(payload, at);
      this.#partial = undefined;
      this.#partialBytes = 0;
    }
    this.#received += 1;
    this.#unreadMessages += 1;
    this.#unreadBytes += data.length;
    return { type: "message", data };
  }

  /** The caller half-closed (responder); a status when that breaks a rule. `single`: one request was due. */
  close(single: boolean): string | undefined {
    if (!this.#open) return "duplicate half-close";
    if (this.#partial !== undefined) return "half-close inside a fragmented message";
    if (single && this.#received === 0) return "half-close without the request message";
    this.#open = false;
    return undefined;
  }

  /**
   * The application consumed a message of `bytes`: returns the bytes freed
   * and the credit to grant now (0: not yet). `grants`: the call still
   * grants credit; `budget`: the window's byte budget. Credit goes back in
   * batches of half the window, and the window grows toward
   * `budget / bytes` (at most {@link MAX_AUTO_WINDOW}) while messages are small.
   */
  consume(bytes: number, grants: boolean, budget: number): { freed: number; grant: number } {
    if (this.#unreadMessages === 0) return { freed: 0, grant: 0 };
    this.#unreadMessages -= 1;
    const freed = Math.min(bytes, this.#unreadBytes);
    this.#unreadBytes -= freed;
    if (!grants || !this.#open) return { freed, grant: 0 };
    this.#toGrant += 1;
    if (budget > 0 && this.#window < MAX_AUTO_WINDOW) {
      const target = Math.min(Math.floor(budget / Math.max(bytes, 1)), MAX_AUTO_WINDOW);
      if (target > this.#window) {
        this.#toGrant += target - this.#window;
        this.#window = target;
      }
    }
    if (this.#toGrant < Math.max(this.#window >>> 1, 1)) return { freed, grant: 0 };
    const grant = this.#toGrant;
    this.#toGrant = 0;
    this.#credit += grant;
    return { freed, grant };
  }

  /** Forgets everything delivered or partial; returns the bytes that frees. */
  clear(): number {
    const held = this.held;
    this.#unreadBytes = 0;
    this.#unreadMessages = 0;
    this.#partial = undefined;
    this.#partialBytes = 0;
    return held;
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
  /** Its `end` event was emitted (a responder that finished ends at once). */
  ended = false;
  /** A responder that stamped a resume cursor: a drain ends it at once (5.6). */
  resumable = false;
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

  /** Whether the peer sends exactly one message on this call. */
  get singleReceive(): boolean {
    return this.role === "caller" ? singleResponse(this.kind) : singleRequest(this.kind);
  }
}
