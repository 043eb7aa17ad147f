/**
 * The protocol state machine of one connection, for the client side (it
 * also serves the calls the server opens toward it). Sans-IO: messages in
 * through `handle*`, bytes and events out through `poll*`, time passed in
 * as milliseconds of any monotonic clock. No sockets, no timers, no promises.
 *
 * The connection routes frames to calls ({@link Call} owns the per-call
 * rules), packs what is ready into WebSocket messages, and ends everything
 * through one teardown path.
 */

import { putU32 } from "./bytes.js";
import { Call, singleResponse } from "./call.js";
import { type Config, checkSettings, DEFAULT_CONFIG, type Limits, maxWebSocketMessage, PROTOCOL_DEFAULTS } from "./config.js";
import { Fifo } from "./fifo.js";
import {
  type CallKind,
  COMPRESSION_GZIP,
  decodeFrame,
  encodeFrame,
  type Frame,
  FrameError,
  FrameType,
  HEADER_LEN,
  isBatch,
  MAX_CREDIT,
  splitBatch,
} from "./frame.js";
import { type Metadata, metadataSize } from "./metadata.js";
import { Code, type CodeName, codeName, type Status, status } from "./status.js";

/** What the connection tells its driver. */
export type Event =
  /** Response headers of a call this side opened. */
  | { type: "headers"; id: number; metadata: Metadata }
  /** A whole message (after reassembly); consume it with {@link Connection.consume}. */
  | { type: "message"; id: number; data: Uint8Array; cursor?: Uint8Array }
  /** The peer ended its stream of a call this side responds to. */
  | { type: "half-closed"; id: number }
  /** A call ended: its status (caller), or why it stopped (responder: RESET, deadline, connection lost). */
  | { type: "end"; id: number; status: Status }
  /** A call that was blocked in `canSend` may send again. */
  | { type: "writable"; id: number }
  /** The peer opened a call toward this side (answer it or reset it). */
  | { type: "open"; id: number; kind: CallKind; method: string; metadata: Metadata; deadline: number | undefined }
  /** The peer is draining: no new calls on this connection. */
  | { type: "goaway"; lastStreamId: number; reason: string }
  /** The connection is over; emitted exactly once. */
  | { type: "closed"; code: number; reason: string };

/**
 * Connection states: `draining` after a GOAWAY either way (calls in flight
 * go on, no new ones); `closed` after teardown (only queued output remains).
 */
type State = "open" | "draining" | "closed";

/** A connection error: a close code and its reason (PROTOCOL.md 9.4). */
class ConnectionError extends Error {
  constructor(
    readonly code: number,
    reason: string,
  ) {
    super(reason);
  }
}

const protocolError = (reason: string) => new ConnectionError(1002, reason);

/** The status a draining responder ends its resumable calls with (5.6). */
const RESUME_ELSEWHERE = "draining: resume on another connection";

/** The metadata key of a resume cursor (PROTOCOL.md 5.6). */
export const CURSOR_KEY = "zrpc-cursor-bin";

/** What {@link Connection.send} did with a message. */
export type SendResult =
  /** Queued; it took one of the peer's credits. */
  | "ok"
  /** Not queued: no credit, or a send buffer is at its bound; a `writable` event follows. */
  | "blocked"
  /** Not queued: the call has ended or its sending side is closed. */
  | "ended"
  /** Not queued: over the peer's MAX_MESSAGE_SIZE; the call goes on. */
  | "too_large"
  /** Not queued: only a server-streaming responder's messages carry a resume cursor. */
  | "not_resumable"
  /** Not queued: the cursor is over the peer's MAX_CURSOR_SIZE. */
  | "cursor_too_large";

/** Options of {@link Connection.open}. */
export interface OpenOptions {
  metadata?: Metadata;
  /** Deadline relative to `now`, ms; 0 or absent: none. */
  timeoutMs?: number;
}

export class Connection {
  readonly config: Config;
  /** The peer's limits (protocol defaults until its SETTINGS arrives). */
  #peer: Limits = { ...PROTOCOL_DEFAULTS };
  #state: State = "open";
  readonly #calls = new Map<number, Call>();
  /** Calls with a frame ready to go, in turn order. */
  readonly #ready = new Fifo<number>();
  readonly #inReady = new Set<number>();
  /** Frames that go before any call data (SETTINGS, OPEN, CREDIT, RESET, PING...). */
  readonly #control = new Fifo<Uint8Array>();
  readonly #events = new Fifo<Event>();
  #nextId = 1;
  /** Highest id the peer opened. */
  #maxPeerId = 0;
  #settingsReceived = false;
  #settingsSent = false;
  #framesReceived = 0;
  /** Our GOAWAY's last id, once sent. */
  #goawaySent: number | undefined;
  /** The peer's GOAWAY's last id, once received. */
  #goawayReceived: number | undefined;
  #close: { code: number; reason: string } | undefined;
  #closeTaken = false;
  #queuedSend = 0;
  /** Received bytes held for the application over all calls. */
  #held = 0;
  #lastReceived: number;
  #pingSentAt: number | undefined;
  readonly #maxInbound: number;
  #responderCalls = 0;

  constructor(config: Partial<Config> = {}, now = 0) {
    this.config = { ...DEFAULT_CONFIG, ...config };
    this.#lastReceived = now;
    this.#maxInbound = maxWebSocketMessage(this.config);
    const c = this.config;
    this.#control.push(
      encodeFrame({
        type: "SETTINGS",
        settings: {
          maxMessageSize: c.maxMessageSize,
          maxConcurrentStreams: c.maxConcurrentStreams,
          initialCredit: c.initialCredit,
          maxFragmentSize: c.maxFragmentSize,
          maxMetadataSize: c.maxMetadataSize,
          maxBatchSize: c.maxBatchSize,
          maxCursorSize: c.maxCursorSize > 0 ? c.maxCursorSize : undefined,
          compression: c.acceptGzip ? COMPRESSION_GZIP : undefined,
        },
      }),
    );
  }

  // ---- state ------------------------------------------------------------

  /** True until the connection starts closing (an error, a close, or the end of a drain); true while draining. */
  get isOpen(): boolean {
    return this.#state !== "closed";
  }

  /** True once GOAWAY was sent or received: no new calls, the ones in flight go on. */
  get isDraining(): boolean {
    return this.#goawaySent !== undefined || this.#goawayReceived !== undefined;
  }

  /** Whether a new call may be opened now. */
  get canOpen(): boolean {
    return this.#state === "open";
  }

  /** True once the connection is over and its close was taken by {@link pollClose} (or none is owed). */
  get isClosed(): boolean {
    return this.#state === "closed" && (this.#close === undefined || this.#closeTaken);
  }

  /** True while `id` holds state. */
  hasCall(id: number): boolean {
    return this.#calls.has(id);
  }

  /** Messages this side may still send on a live call before `send` says "blocked". */
  sendCredit(id: number): number | undefined {
    return this.#calls.get(id)?.send.credit;
  }

  /** The receive window of a live call, messages. */
  recvWindow(id: number): number | undefined {
    return this.#calls.get(id)?.recv.window;
  }

  /** True when `send` on `id` would say "blocked" now (no credit, or a send bound reached). */
  wouldBlock(id: number): boolean {
    const call = this.#calls.get(id);
    if (call === undefined) return false;
    return (
      call.send.credit === 0 ||
      call.send.queuedBytes >= this.config.maxCallSendBuffer ||
      this.#queuedSend >= this.config.maxConnectionSendBuffer
    );
  }

  /** Live calls, both directions. */
  get liveCalls(): number {
    return this.#calls.size;
  }

  /** Received bytes held for the application. */
  get heldBytes(): number {
    return this.#held;
  }

  /** Bytes queued to send. */
  get queuedBytes(): number {
    return this.#queuedSend;
  }

  /** Whether events are waiting for {@link pollEvent}. */
  get hasEvents(): boolean {
    return this.#events.length > 0;
  }

  /** The peer's limits as it announced them. */
  get peerLimits(): Readonly<Limits> {
    return this.#peer;
  }

  // ---- actions ----------------------------------------------------------

  /** Opens a call; returns its id. Throws a status when no call can be opened. */
  open(kind: CallKind, method: string, now: number, opts: OpenOptions = {}): number {
    if (this.#state !== "open") {
      throw status("UNAVAILABLE", this.#state === "draining" ? "connection is draining" : "connection closed");
    }
    if (this.#nextId > 0xffffffff) throw status("UNAVAILABLE", "stream ids used up: open a new connection");
    const metadata = opts.metadata ?? [];
    if (metadataSize(metadata) > this.#peer.maxMetadataSize) {
      throw status("RESOURCE_EXHAUSTED", `request metadata over the server's limit of ${this.#peer.maxMetadataSize} bytes`);
    }
    const id = this.#nextId;
    // A single-response call grants exactly the one message it may receive.
    const credit = singleResponse(kind) ? 1 : this.config.callCredit;
    const timeoutMs = Math.max(0, Math.min(Math.ceil(opts.timeoutMs ?? 0), 0xffffffff));
    let open: Uint8Array;
    try {
      open = encodeFrame({
        type: "OPEN",
        stream: id,
        kind,
        timeoutMs,
        initialCredit: credit,
        method,
        metadata,
      });
    } catch (e) {
      throw status("INVALID_ARGUMENT", e instanceof Error ? e.message : String(e));
    }
    this.#nextId += 2;
    const call = new Call(id, "caller", kind, this.#peer.initialCredit, credit);
    if (timeoutMs > 0) call.deadline = now + timeoutMs;
    this.#calls.set(id, call);
    this.#control.push(open);
    return id;
  }

  /**
   * Whether a message may be queued on `id` now: the peer has credit for
   * it and the send buffers have room. When not, a `writable` event follows
   * once it may.
   */
  canSend(id: number): boolean {
    if (!this.wouldBlock(id)) return true;
    this.#wantWritable.add(id);
    return false;
  }

  readonly #wantWritable = new Set<number>();

  /**
   * Queues a message (the caller's last one when `end`); it takes one of
   * the peer's credits now. See {@link SendResult}.
   */
  send(id: number, data: Uint8Array, end = false, cursor?: Uint8Array): SendResult {
    const call = this.#calls.get(id);
    if (call === undefined || call.send.state !== "open") return "ended";
    // A peer that offered no cursor cannot resume: the message goes alone (5.6).
    const stamp = this.#peer.maxCursorSize > 0 ? cursor : undefined;
    if (stamp !== undefined) {
      if (stamp.length > this.#peer.maxCursorSize) return "cursor_too_large";
      if (call.role !== "responder" || call.kind !== "server_streaming") return "not_resumable";
    }
    if (data.length > this.#peer.maxMessageSize) return "too_large";
    if (!this.canSend(id)) return "blocked";
    let out = data;
    if (stamp !== undefined) {
      call.resumable = true;
      // One slice: the message, then its cursor trailer (a copy, of stamped messages only).
      out = new Uint8Array(data.length + stamp.length + 1);
      out.set(data);
      out.set(stamp, data.length);
      out[out.length - 1] = stamp.length;
    }
    call.send.push(out, end && call.role === "caller", stamp !== undefined);
    this.#queuedSend += out.length;
    this.#schedule(call);
    return "ok";
  }

  /** Ends the request stream of a call this side opened. */
  halfClose(id: number): void {
    const call = this.#calls.get(id);
    if (call === undefined || call.role !== "caller" || call.send.state !== "open") return;
    call.send.end();
    this.#schedule(call);
  }

  /** The application consumed a message of `bytes` from `id`: credit flows back. */
  consume(id: number, bytes: number): void {
    const call = this.#calls.get(id);
    if (call === undefined) return;
    const { freed, grant } = call.recv.consume(bytes, !call.singleReceive, this.config.callWindowBytes);
    this.#held -= freed;
    if (grant > 0) this.#control.push(encodeFrame({ type: "CREDIT", stream: id, credit: grant }));
  }

  /** Aborts a call: RESET as its caller, STATUS as its responder. */
  reset(id: number, code: CodeName = "CANCELLED", message = "cancelled"): void {
    const call = this.#calls.get(id);
    if (call === undefined) return;
    this.#streamError(call, status(code, message));
  }

  /** Response headers of a call the peer opened (before its first message). */
  sendHeaders(id: number, metadata: Metadata): void {
    const call = this.#calls.get(id);
    if (call === undefined || call.role !== "responder" || call.headersDone) return;
    const cursor = metadata.find(([k]) => k === CURSOR_KEY);
    if (cursor !== undefined) {
      // The resume point before the first message (5.6): the same rules as a message's cursor.
      const limit = this.#peer.maxCursorSize;
      if (limit === 0 || cursor[1].length > limit || call.kind !== "server_streaming") {
        metadata = metadata.filter(([k]) => k !== CURSOR_KEY);
      } else {
        call.resumable = true;
      }
    }
    call.headersDone = true;
    this.#control.push(encodeFrame({ type: "HEADERS", stream: id, metadata }));
  }

  /** Ends a call the peer opened with `s`, after the messages already queued. */
  sendStatus(id: number, s: Status): void {
    const call = this.#calls.get(id);
    if (call === undefined || call.role !== "responder" || call.pendingStatus !== undefined) return;
    call.headersDone = true;
    call.pendingStatus = s;
    call.send.end();
    this.#schedule(call);
    // The call ends here at once; its STATUS goes out after its queued messages.
    call.ended = true;
    this.#events.push({ type: "end", id, status: s });
  }

  /**
   * Starts a graceful close: GOAWAY, no new calls, and once the calls in
   * flight have ended the connection closes with 1000.
   */
  drain(reason = "client closing"): void {
    if (this.#state === "closed" || this.#goawaySent !== undefined) return;
    this.#goawaySent = this.#maxPeerId;
    this.#state = "draining";
    // A GOAWAY reason is at most 1,024 bytes (PROTOCOL.md 3.2).
    this.#control.push(encodeFrame({ type: "GOAWAY", lastStreamId: this.#maxPeerId, code: 1000, reason: truncateUtf8(reason, 1024) }));
    // Resumable calls end now, after what they queued: their callers go on elsewhere (5.6).
    for (const call of this.#calls.values()) {
      if (call.resumable && !call.ended) this.sendStatus(call.id, status("UNAVAILABLE", RESUME_ELSEWHERE));
    }
    this.#maybeDrained();
  }

  /**
   * Closes at once (for example when the page unloads, or after a drain's
   * grace period): every call ends with UNAVAILABLE, a GOAWAY with `code`
   * goes out, then the close.
   */
  abort(code = 1000, reason = "closed by the application"): void {
    this.#fail(new ConnectionError(code, reason), `connection closed (${code}${reason ? `: ${reason}` : ""})`);
  }

  // ---- inputs -----------------------------------------------------------

  /**
   * The gzip payload of a COMPRESSED message (PROTOCOL.md 3.4), once it is
   * checked against this side's offer; `undefined` when it was refused (the
   * connection is then closing). Inflate it, at most to {@link maxInflated}
   * bytes, and give the content to {@link handleMessage} with `inflated`;
   * {@link inflateFailed} when that fails.
   */
  compressedPayload(data: Uint8Array, now: number): Uint8Array | undefined {
    if (this.#state === "closed") return undefined;
    this.#lastReceived = now;
    this.#pingSentAt = undefined;
    let why: string | undefined;
    if (!this.config.acceptGzip) why = "COMPRESSED, which this side did not offer";
    else if (!this.#settingsReceived) why = "first frame is not SETTINGS";
    else if (data.length < HEADER_LEN || data.subarray(1, HEADER_LEN).some((b) => b !== 0)) why = "COMPRESSED with flags or a stream id";
    if (why === undefined) return data.subarray(HEADER_LEN);
    this.#fail(protocolError(why));
    return undefined;
  }

  /** The largest content a COMPRESSED message may inflate to: the largest message this side accepts. */
  get maxInflated(): number {
    return Math.max(this.#maxInbound, HEADER_LEN + this.config.maxBatchSize);
  }

  /** Inflating a COMPRESSED message failed: its content was over {@link maxInflated} (1009), or not gzip (1002). */
  inflateFailed(tooLarge: boolean): void {
    if (this.#state === "closed") return;
    this.#fail(
      tooLarge
        ? new ConnectionError(1009, `decompressed message over the limit of ${this.maxInflated}`)
        : protocolError("COMPRESSED payload is not one gzip member"),
    );
  }

  /** A WebSocket message arrived (`inflated`: the content of a COMPRESSED one). */
  handleMessage(data: Uint8Array | string, now: number, inflated = false): void {
    if (this.#state === "closed") return;
    this.#lastReceived = now;
    this.#pingSentAt = undefined;
    try {
      if (typeof data === "string") throw new ConnectionError(1003, "text message on a zrpc.v1 connection");
      if (data[0] === FrameType.COMPRESSED) {
        throw protocolError(inflated ? "COMPRESSED inside COMPRESSED" : "COMPRESSED not inflated");
      }
      if (inflated && data[0] === FrameType.SETTINGS) throw protocolError("SETTINGS compressed");
      if (data.length > this.#maxInbound && !(isBatch(data) && data.length <= HEADER_LEN + this.config.maxBatchSize)) {
        throw new ConnectionError(1009, `message of ${data.length} bytes over the limit of ${this.#maxInbound}`);
      }
      if (isBatch(data)) {
        if (this.config.maxBatchSize === 0) throw protocolError("BATCH not offered");
        if (data.length > HEADER_LEN + this.config.maxBatchSize) throw new ConnectionError(1009, "BATCH over MAX_BATCH_SIZE");
        for (const f of splitBatch(data)) {
          this.#onFrame(decodeFrame(f), now);
          if (this.isClosed) return;
        }
      } else {
        this.#onFrame(decodeFrame(data), now);
      }
    } catch (e) {
      if (e instanceof FrameError) this.#fail(new ConnectionError(1002, e.message));
      else if (e instanceof ConnectionError) this.#fail(e);
      else throw e;
    }
  }

  /** The WebSocket closed (or failed: pass 1006). */
  handleClose(code: number, reason: string): void {
    const why = code === 1000 && this.#calls.size === 0 ? "connection closed" : `connection closed (${code}${reason ? `: ${reason}` : ""})`;
    this.#teardown(code, reason, status("UNAVAILABLE", why), false);
  }

  /** Time passed: deadlines and keepalive. Call it at {@link pollTimeout}. */
  handleTimeout(now: number): void {
    if (this.#state === "closed") return;
    for (const call of [...this.#calls.values()]) {
      if (call.deadline !== undefined && call.deadline <= now) {
        this.#streamError(call, status("DEADLINE_EXCEEDED", "deadline exceeded"));
      }
    }
    const k = this.config;
    if (k.keepaliveIntervalMs > 0) {
      if (this.#pingSentAt !== undefined && now >= this.#pingSentAt + k.keepaliveTimeoutMs) {
        this.#fail(new ConnectionError(4000, "keepalive timeout"));
      } else if (this.#pingSentAt === undefined && now >= this.#lastReceived + k.keepaliveIntervalMs) {
        this.#pingSentAt = now;
        this.#control.push(encodeFrame({ type: "PING", ack: false, data: new Uint8Array(8) }));
      }
    }
  }

  // ---- outputs ----------------------------------------------------------

  /** The next event, if any. */
  pollEvent(): Event | undefined {
    return this.#events.shift();
  }

  /** When {@link handleTimeout} is next due, if ever. */
  pollTimeout(): number | undefined {
    if (this.#state === "closed") return undefined;
    let at: number | undefined;
    for (const call of this.#calls.values()) {
      if (call.deadline !== undefined && (at === undefined || call.deadline < at)) at = call.deadline;
    }
    const k = this.config;
    if (k.keepaliveIntervalMs > 0) {
      const t = this.#pingSentAt !== undefined ? this.#pingSentAt + k.keepaliveTimeoutMs : this.#lastReceived + k.keepaliveIntervalMs;
      if (at === undefined || t < at) at = t;
    }
    return at;
  }

  /**
   * The next WebSocket message to send, if any: control frames first, then
   * one frame per ready call in turn, packed in a BATCH when the peer
   * offered one and more than one frame is ready.
   */
  pollTransmit(): Uint8Array | undefined {
    if (!this.#settingsSent) {
      // SETTINGS is the first frame, alone in its message.
      this.#settingsSent = true;
      return this.#control.shift();
    }
    const limit = this.#settingsReceived ? this.#peer.maxBatchSize : 0;
    const first = this.#nextFrame();
    if (first === undefined) return undefined;
    const firstLen = outLength(first);
    if (limit === 0 || firstLen > limit || firstLen > 0xffff) return encodeOut(first);
    const outs = [first];
    let size = 2 + firstLen;
    for (;;) {
      const f = this.#peekFits(limit - size);
      if (f === undefined) break;
      outs.push(f);
      size += 2 + outLength(f);
    }
    if (outs.length === 1) return encodeOut(first);
    // Data frames are written straight into the BATCH: one buffer, one copy of each payload.
    const batch = new Uint8Array(HEADER_LEN + size);
    batch[0] = FrameType.BATCH;
    let at = HEADER_LEN;
    for (const o of outs) {
      const len = outLength(o);
      batch[at] = len >>> 8;
      batch[at + 1] = len;
      writeOut(batch, at + 2, o);
      at += 2 + len;
    }
    return batch;
  }

  /** The close the driver must perform after sending what is queued, once. */
  pollClose(): { code: number; reason: string } | undefined {
    if (this.#close === undefined || this.#closeTaken) return undefined;
    if (this.#control.length > 0 || this.#ready.length > 0) return undefined;
    this.#closeTaken = true;
    return this.#close;
  }

  // ---- sending ----------------------------------------------------------

  #schedule(call: Call): void {
    if (!this.#inReady.has(call.id) && (call.send.ready() || call.pendingStatus !== undefined)) {
      this.#inReady.add(call.id);
      this.#ready.push(call.id);
    }
  }

  /** A frame of at most `room` bytes (plus entry header) if one is ready, else undefined. */
  #peekFits(room: number): Out | undefined {
    if (room < 2 + HEADER_LEN) return undefined;
    const c = this.#control.peek();
    if (c !== undefined) return c.length + 2 <= room ? this.#control.shift() : undefined;
    const id = this.#ready.peek();
    if (id === undefined) return undefined;
    const call = this.#calls.get(id);
    if (call === undefined) return this.#nextFrame();
    // A data frame fits when its whole payload does (fragments are not shrunk to fit).
    const s = call.send;
    const maxPayload = Math.min(this.#peer.maxFragmentSize, room - 2 - HEADER_LEN);
    if (s.ready() && s.nextLength(this.#peer.maxFragmentSize) > maxPayload) return undefined;
    return this.#nextFrame();
  }

  #nextFrame(): Out | undefined {
    const c = this.#control.shift();
    if (c !== undefined) return c;
    while (this.#ready.length > 0) {
      const id = this.#ready.shift() as number;
      this.#inReady.delete(id);
      const call = this.#calls.get(id);
      if (call === undefined) continue;
      const frame = this.#callFrame(call);
      if (call.send.ready() || call.pendingStatus !== undefined) {
        this.#inReady.add(id);
        this.#ready.push(id);
      }
      if (frame !== undefined) return frame;
    }
    return undefined;
  }

  #callFrame(call: Call): Out | undefined {
    const before = call.send.queuedBytes;
    const next = call.send.next(this.#peer.maxFragmentSize, call.role === "caller");
    this.#queuedSend -= before - call.send.queuedBytes;
    this.#notifyWritable(call);
    if (next?.type === "message")
      return { stream: call.id, payload: next.payload, flags: (next.end ? 1 : 0) | (next.more ? 2 : 0) | (next.cursor ? 4 : 0) };
    if (next?.type === "half-close") return encodeFrame({ type: "HALF_CLOSE", stream: call.id });
    if (call.pendingStatus !== undefined && call.send.queuedMessages === 0) {
      const s = call.pendingStatus;
      call.pendingStatus = undefined;
      const frame = this.#statusFrame(call.id, s);
      this.#end(call, s);
      return frame;
    }
    return undefined;
  }

  #notifyWritable(call: Call): void {
    if (!this.#wantWritable.has(call.id)) return;
    const s = call.send;
    if (
      s.credit > s.queuedMessages &&
      s.queuedBytes < this.config.maxCallSendBuffer &&
      this.#queuedSend < this.config.maxConnectionSendBuffer
    ) {
      this.#wantWritable.delete(call.id);
      this.#events.push({ type: "writable", id: call.id });
    }
  }

  #statusFrame(id: number, s: Status): Uint8Array {
    let frame = encodeFrame({
      type: "STATUS",
      stream: id,
      code: Code[s.code],
      message: s.message,
      details: s.details,
      trailers: s.trailers,
    });
    if (frame.length - HEADER_LEN > this.#peer.maxMetadataSize) {
      // Too large for the peer: the code and a shortened message still go.
      const message = `${s.message.slice(0, 200)} (status truncated: over the peer's metadata limit)`;
      frame = encodeFrame({ type: "STATUS", stream: id, code: Code[s.code], message, details: new Uint8Array(0), trailers: [] });
    }
    return frame;
  }

  // ---- receiving --------------------------------------------------------

  #onFrame(f: Frame, now: number): void {
    const first = this.#framesReceived === 0;
    this.#framesReceived += 1;
    switch (f.type) {
      case "SETTINGS": {
        if (!first) throw protocolError("SETTINGS after the first frame");
        const bad = checkSettings(f.settings);
        if (bad !== undefined) throw protocolError(bad);
        Object.assign(this.#peer, f.settings);
        this.#settingsReceived = true;
        return;
      }
      case "PING":
        if (!f.ack) {
          this.#control.push(encodeFrame({ type: "PING", ack: true, data: f.data }));
          if (this.#control.length > this.config.maxPendingControl) throw new ConnectionError(1008, "peer does not read its PING replies");
        }
        return;
      case "GOAWAY":
        this.#onGoAway(f.lastStreamId, f.code, f.reason);
        return;
      case "OPEN":
        this.#onOpen(f, now);
        return;
      default:
        this.#onCallFrame(f);
        return;
    }
  }

  #onGoAway(last: number, code: number, reason: string): void {
    if (code !== 1000) {
      const why = `the server closed the connection (${code}${reason ? `: ${reason}` : ""})`;
      this.#teardown(code, reason, status("UNAVAILABLE", why), true);
      return;
    }
    last = Math.min(last, this.#goawayReceived ?? last);
    this.#goawayReceived = last;
    if (this.#state === "open") this.#state = "draining";
    const refused = [...this.#calls.values()].filter((c) => c.role === "caller" && c.id > last).sort((a, b) => a.id - b.id);
    for (const call of refused) {
      this.#end(call, { ...status("UNAVAILABLE", "not processed: the server is draining (GOAWAY); safe to retry"), notProcessed: true });
    }
    this.#events.push({ type: "goaway", lastStreamId: last, reason });
    this.#maybeDrained();
  }

  #onOpen(f: Extract<Frame, { type: "OPEN" }>, now: number): void {
    if (f.stream % 2 === 1 || f.stream <= this.#maxPeerId)
      throw protocolError("OPEN with a stream id not above the peer's last, or of the wrong parity");
    this.#maxPeerId = f.stream;
    const size = metadataSize(f.metadata);
    if (size > this.config.maxMetadataSize) throw new ConnectionError(1009, "request metadata over MAX_METADATA_SIZE");
    if (this.#goawaySent !== undefined) return; // above our GOAWAY's last id: not processed
    const call = new Call(f.stream, "responder", f.kind, f.initialCredit, this.config.initialCredit);
    if (this.#responderCalls >= this.config.maxConcurrentStreams) {
      this.#control.push(this.#statusFrame(f.stream, status("RESOURCE_EXHAUSTED", "too many concurrent calls")));
      return;
    }
    if (f.timeoutMs > 0) call.deadline = now + f.timeoutMs;
    this.#calls.set(call.id, call);
    this.#responderCalls += 1;
    this.#events.push({ type: "open", id: call.id, kind: f.kind, method: f.method, metadata: f.metadata, deadline: call.deadline });
  }

  /** The live call a frame is for, or undefined for a frame to ignore. */
  #live(id: number): Call | undefined {
    const call = this.#calls.get(id);
    if (call !== undefined) return call;
    const ours = id % 2 === 1;
    if (ours ? id >= this.#nextId : id > this.#maxPeerId) throw protocolError("frame for a stream that was never opened");
    return undefined;
  }

  #onCallFrame(f: Exclude<Frame, { type: "SETTINGS" | "PING" | "GOAWAY" | "OPEN" }>): void {
    const call = this.#live(f.stream);
    if (call === undefined) return;
    const caller = call.role === "caller";
    switch (f.type) {
      case "HEADERS": {
        if (!caller) throw protocolError("HEADERS from the caller");
        if (metadataSize(f.metadata) > this.config.maxMetadataSize)
          throw new ConnectionError(1009, "response headers over MAX_METADATA_SIZE");
        if (call.headersDone) {
          this.#streamError(call, status("INTERNAL", "response headers after headers or a message"));
          return;
        }
        const cursor = f.metadata.find(([k]) => k === CURSOR_KEY);
        if (cursor !== undefined) this.#checkCursor(call, cursor[1].length);
        call.headersDone = true;
        this.#events.push({ type: "headers", id: call.id, metadata: f.metadata });
        return;
      }
      case "MESSAGE":
        this.#onMessage(call, f.payload, f.more, f.endStream, f.cursor);
        return;
      case "HALF_CLOSE":
        if (caller) throw protocolError("HALF_CLOSE from the responder");
        this.#onHalfClose(call);
        return;
      case "STATUS": {
        if (!caller) throw protocolError("STATUS from the caller");
        const size = f.message.length + f.details.length + metadataSize(f.trailers) + 7;
        if (size > this.config.maxMetadataSize) throw new ConnectionError(1009, "STATUS over MAX_METADATA_SIZE");
        let s: Status = { code: codeName(f.code), message: f.message, details: f.details.slice(), trailers: f.trailers };
        if (s.code === "OK" && call.recv.received !== 1 && call.singleReceive) {
          s = status("INTERNAL", "OK status without the one response message");
        }
        this.#end(call, s);
        return;
      }
      case "RESET":
        this.#end(call, status(codeName(f.code), caller ? "call reset by the server" : "call cancelled by the caller"));
        return;
      case "CREDIT": {
        if (call.send.credit + f.credit > MAX_CREDIT) throw protocolError("stream credit above 2^31-1");
        call.send.credit += f.credit;
        this.#schedule(call);
        this.#notifyWritable(call);
        return;
      }
    }
  }

  /** A resume cursor of `len` bytes from the peer (5.6). */
  #checkCursor(call: Call, len: number): void {
    if (this.config.maxCursorSize === 0) throw protocolError("a resume cursor, which this side did not offer");
    if (len > this.config.maxCursorSize) throw new ConnectionError(1009, "resume cursor over MAX_CURSOR_SIZE");
    if (call.role !== "caller" || call.kind !== "server_streaming")
      throw protocolError("a resume cursor outside the responses of a server-streaming call");
  }

  #onMessage(call: Call, payload: Uint8Array, more: boolean, end: boolean, cursor: Uint8Array | undefined): void {
    const wireLen = payload.length + (cursor === undefined ? 0 : 1 + cursor.length);
    if (wireLen > this.config.maxFragmentSize) throw new ConnectionError(1009, "MESSAGE frame over MAX_FRAGMENT_SIZE");
    if (cursor !== undefined) this.#checkCursor(call, cursor.length);
    if (end && call.role === "caller") throw protocolError("END_STREAM from the responder");
    const heldBefore = call.recv.held;
    const r = call.recv.onFragment(payload, more, call.singleReceive, this.config.maxMessageSize);
    switch (r.type) {
      case "connection-fault":
        throw protocolError(r.message);
      case "call-fault":
        this.#streamError(call, status(r.code, r.message));
        return;
      case "partial":
        break;
      case "message":
        if (call.role === "caller") call.headersDone = true;
        this.#events.push(
          cursor === undefined
            ? { type: "message", id: call.id, data: r.data }
            : { type: "message", id: call.id, data: r.data, cursor: cursor.slice() },
        );
        break;
    }
    this.#held += call.recv.held - heldBefore;
    this.#enforceBuffer();
    if (end && this.#calls.has(call.id)) this.#onHalfClose(call);
  }

  #onHalfClose(call: Call): void {
    const problem = call.recv.close(call.singleReceive);
    if (problem !== undefined) {
      this.#streamError(call, status("INTERNAL", problem));
      return;
    }
    this.#events.push({ type: "half-closed", id: call.id });
  }

  /** Ends the call holding the most while the connection-wide bound is exceeded. */
  #enforceBuffer(): void {
    while (this.#held > this.config.maxConnectionBuffer) {
      let victim: Call | undefined;
      for (const c of this.#calls.values()) if (victim === undefined || c.recv.held > victim.recv.held) victim = c;
      if (victim === undefined || victim.recv.held === 0) return;
      this.#streamError(victim, status("RESOURCE_EXHAUSTED", "connection receive buffer full: this call's reader is the slowest"));
    }
  }

  // ---- ending -----------------------------------------------------------

  /** A stream error: tell the peer (RESET or STATUS) and end the call here. */
  #streamError(call: Call, s: Status): void {
    if (call.role === "caller") {
      this.#control.push(encodeFrame({ type: "RESET", stream: call.id, code: Code[s.code] }));
    } else {
      this.#control.push(this.#statusFrame(call.id, s));
    }
    this.#end(call, s);
  }

  /** Ends one call: frees its buffers, emits `end` (once: a responder that finished has had it). */
  #end(call: Call, s: Status): void {
    if (!this.#remove(call)) return;
    if (!call.ended) {
      call.ended = true;
      this.#events.push({ type: "end", id: call.id, status: s });
    }
    this.#maybeDrained();
  }

  /** Forgets a call and frees its buffers; false when it was already gone. */
  #remove(call: Call): boolean {
    if (!this.#calls.delete(call.id)) return false;
    this.#queuedSend -= call.send.clear();
    this.#held -= call.recv.clear();
    this.#wantWritable.delete(call.id);
    if (call.role === "responder") this.#responderCalls -= 1;
    return true;
  }

  #maybeDrained(): void {
    if (this.#state === "draining" && this.#goawaySent !== undefined && this.#calls.size === 0) {
      this.#teardown(1000, "drained", status("UNAVAILABLE", "drained"), true);
    }
  }

  /** A fault found here, or a local close: GOAWAY with the close code, every call ends UNAVAILABLE, then the close. */
  #fail(e: ConnectionError, why = `connection error: ${e.message}`): void {
    if (this.#state === "closed") return;
    this.#control.clear();
    this.#control.push(encodeFrame({ type: "GOAWAY", lastStreamId: this.#maxPeerId, code: e.code, reason: truncateUtf8(e.message, 1024) }));
    this.#teardown(e.code, e.message, status("UNAVAILABLE", why), true);
  }

  /**
   * The one teardown: every call ends with `s`, nothing more is sent but
   * what is already queued in `control`, `closed` is emitted once, and when
   * `sendClose` the driver is asked to close the WebSocket.
   */
  #teardown(code: number, reason: string, s: Status, sendClose: boolean): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#ready.clear();
    this.#inReady.clear();
    for (const call of [...this.#calls.values()]) this.#end(call, s);
    if (sendClose && this.#close === undefined) this.#close = { code, reason: truncateUtf8(reason, 123) };
    if (!sendClose) this.#control.clear();
    this.#events.push({ type: "closed", code, reason });
  }
}

/** A frame to send: encoded (control frames), or a MESSAGE still to be written. */
type Out = Uint8Array | { stream: number; payload: Uint8Array; flags: number };

function outLength(o: Out): number {
  return o instanceof Uint8Array ? o.length : HEADER_LEN + o.payload.length;
}

/** Writes `o` into `buf` at `at`. */
function writeOut(buf: Uint8Array, at: number, o: Out): void {
  if (o instanceof Uint8Array) {
    buf.set(o, at);
    return;
  }
  buf[at] = FrameType.MESSAGE;
  buf[at + 1] = o.flags;
  putU32(buf, at + 2, o.stream);
  buf.set(o.payload, at + HEADER_LEN);
}

/** `o` as a WebSocket message of its own. */
function encodeOut(o: Out): Uint8Array {
  if (o instanceof Uint8Array) return o;
  const buf = new Uint8Array(outLength(o));
  writeOut(buf, 0, o);
  return buf;
}

/** `s` cut to at most `max` bytes of UTF-8, at a character boundary. */
function truncateUtf8(s: string, max: number): string {
  let r = s;
  while (new TextEncoder().encode(r).length > max) r = r.slice(0, -1);
  return r;
}
