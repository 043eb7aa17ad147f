#!/usr/bin/env python3
"""Regenerates docs/vectors.json from the layouts in docs/PROTOCOL.md.

Written independently of the Rust code (standard library only), so that the
core's tests compare two implementations of the specification.
Usage: python3 scripts/gen_vectors.py > docs/vectors.json
"""
import json
import struct

TYPES = {"SETTINGS": 0, "OPEN": 1, "HEADERS": 2, "MESSAGE": 3, "HALF_CLOSE": 4,
         "STATUS": 5, "RESET": 6, "CREDIT": 7, "PING": 8, "GOAWAY": 9}
KINDS = {"unary": 0, "server_streaming": 1, "client_streaming": 2, "bidi": 3}
SETTING_IDS = {"max_message_size": 1, "max_concurrent_streams": 2, "initial_credit": 3,
               "max_fragment_size": 4, "max_metadata_size": 5, "max_batch_size": 6,
               "max_cursor_size": 7, "compression": 8}


def header(ty, flags, stream):
    return struct.pack(">BBI", TYPES[ty], flags, stream)


def str16(b):
    return struct.pack(">H", len(b)) + b


def value_bytes(key, value):
    # "-bin" values are given as hex in the vectors, others as text.
    return bytes.fromhex(value) if key.endswith("-bin") else value.encode()


def metadata(entries):
    out = struct.pack(">H", len(entries))
    for key, value in entries:
        out += str16(key.encode()) + str16(value_bytes(key, value))
    return out


def encode(f):
    ty = f["type"]
    if ty == "SETTINGS":
        body = b"".join(struct.pack(">HI", SETTING_IDS[k], v) for k, v in f["settings"].items())
        return header(ty, 0, 0) + body
    if ty == "OPEN":
        return (header(ty, 0, f["stream"]) + struct.pack(">BII", KINDS[f["kind"]], f["timeout_ms"], f["initial_credit"])
                + str16(f["method"].encode()) + metadata(f["metadata"]))
    if ty == "HEADERS":
        return header(ty, 0, f["stream"]) + metadata(f["metadata"])
    if ty == "MESSAGE":
        flags = (1 if f["end_stream"] else 0) | (2 if f["more"] else 0)
        trailer = b""
        if "cursor_hex" in f:
            # CURSOR: the payload ends with the cursor, then its length.
            c = bytes.fromhex(f["cursor_hex"])
            flags |= 4
            trailer = c + struct.pack(">B", len(c))
        return header(ty, flags, f["stream"]) + bytes.fromhex(f["payload_hex"]) + trailer
    if ty == "HALF_CLOSE":
        return header(ty, 0, f["stream"])
    if ty == "STATUS":
        details = bytes.fromhex(f["details_hex"])
        return (header(ty, 0, f["stream"]) + struct.pack(">B", f["code"]) + str16(f["message"].encode())
                + struct.pack(">I", len(details)) + details + metadata(f["trailers"]))
    if ty == "RESET":
        return header(ty, 0, f["stream"]) + struct.pack(">B", f["code"])
    if ty == "CREDIT":
        return header(ty, 0, f["stream"]) + struct.pack(">I", f["credit"])
    if ty == "PING":
        return header(ty, 1 if f["ack"] else 0, 0) + bytes.fromhex(f["data_hex"])
    if ty == "GOAWAY":
        return header(ty, 0, 0) + struct.pack(">IH", f["last_stream_id"], f["code"]) + str16(f["reason"].encode())
    raise ValueError(ty)


FRAMES = [
    ("settings-zrpc", {"type": "SETTINGS", "settings": {
        "max_message_size": 4194304, "max_concurrent_streams": 1024, "initial_credit": 16,
        "max_fragment_size": 65536, "max_metadata_size": 16384, "max_batch_size": 16384,
        "max_cursor_size": 64, "compression": 1}}),
    ("settings-empty", {"type": "SETTINGS", "settings": {}}),
    ("open-unary-timeout", {"type": "OPEN", "stream": 1, "kind": "unary", "timeout_ms": 1000,
                            "initial_credit": 1, "method": "echo.Echo/Say", "metadata": []}),
    ("open-bidi-metadata", {"type": "OPEN", "stream": 3, "kind": "bidi", "timeout_ms": 0, "initial_credit": 16,
                            "method": "people.People/CreatePeople",
                            "metadata": [["x-request-id", "42"], ["trace-bin", "00ff10"]]}),
    ("open-server-initiated", {"type": "OPEN", "stream": 2, "kind": "server_streaming", "timeout_ms": 0,
                               "initial_credit": 16, "method": "client.Notify/Watch", "metadata": []}),
    ("headers", {"type": "HEADERS", "stream": 1, "metadata": [["server", "zrpc"]]}),
    ("message-end-stream", {"type": "MESSAGE", "stream": 1, "end_stream": True, "more": False, "payload_hex": "6869"}),
    ("message-empty", {"type": "MESSAGE", "stream": 5, "end_stream": False, "more": False, "payload_hex": ""}),
    ("message-fragment", {"type": "MESSAGE", "stream": 7, "end_stream": False, "more": True, "payload_hex": "0102030405"}),
    ("message-person", {"type": "MESSAGE", "stream": 1, "end_stream": False, "more": False,
                        "payload_hex": "0a036a6f6e120b6a6f6e406a6f6e2e636f6d1a1068747470733a2f2f6a6f6e2e636f6d2f"}),
    ("message-cursor", {"type": "MESSAGE", "stream": 1, "end_stream": False, "more": False,
                        "cursor_hex": "0000002a00000000000003e7", "payload_hex": "082a"}),
    ("message-empty-cursor-empty-last-fragment", {"type": "MESSAGE", "stream": 3, "end_stream": False,
                                                  "more": False, "cursor_hex": "", "payload_hex": ""}),
    ("headers-resume-point", {"type": "HEADERS", "stream": 1, "metadata": [["zrpc-cursor-bin", "0000000700000000"]]}),
    ("half-close", {"type": "HALF_CLOSE", "stream": 3}),
    ("status-ok", {"type": "STATUS", "stream": 1, "code": 0, "message": "", "details_hex": "", "trailers": []}),
    ("status-not-found-details-trailers", {"type": "STATUS", "stream": 9, "code": 5, "message": "no such person",
                                           "details_hex": "0801", "trailers": [["retry-after", "5"]]}),
    ("reset-cancelled", {"type": "RESET", "stream": 3, "code": 1}),
    ("reset-deadline", {"type": "RESET", "stream": 11, "code": 4}),
    ("credit", {"type": "CREDIT", "stream": 3, "credit": 8}),
    ("ping", {"type": "PING", "ack": False, "data_hex": "0000000000000001"}),
    ("ping-ack", {"type": "PING", "ack": True, "data_hex": "0000000000000001"}),
    ("goaway-drain", {"type": "GOAWAY", "last_stream_id": 41, "code": 1000, "reason": "draining"}),
    ("goaway-protocol-error", {"type": "GOAWAY", "last_stream_id": 0, "code": 1002,
                               "reason": "malformed frame: unknown frame type 0x0b"}),
]

INVALID = [
    ("too-short", "030000", "Empty"),
    ("unknown-type", "0b0000000001", "UnknownType"),
    ("batch-where-a-frame-is-expected", "0a0000000000", "Batch"),
    ("message-on-stream-0", "030000000000", "ZeroStreamId"),
    ("ping-on-stream-1", "0800000000010000000000000000", "NonZeroStreamId"),
    ("message-end-and-more", "030300000001", "InvalidFlags"),
    ("message-cursor-and-more", "03060000000100", "InvalidFlags"),
    ("message-cursor-without-its-length", "030400000001", "Truncated"),
    ("message-cursor-past-the-end", "0304000000016162636405", "Truncated"),
    ("credit-zero", "07000000000100000000", "ZeroCredit"),
    ("credit-truncated", "070000000001000000", "Truncated"),
    ("half-close-trailing", "04000000000100", "TrailingBytes"),
    ("settings-odd-length", "0000000000000001", "InvalidSettingsLength"),
    # A COMPRESSED message is unwrapped before frames are decoded (3.4): as
    # a frame (inside a BATCH or another COMPRESSED) its type is unknown.
    ("compressed-as-a-frame", "0b00000000001f8b", "UnknownType"),
    ("open-bad-kind", "010000000001070000000000000001000165" + "0000", "InvalidKind"),
    ("open-empty-method", "01000000000100000000000000000100000000", "InvalidMethodLength"),
    ("open-method-not-utf8", "0100000000010000000000000000010001ff0000", "InvalidUtf8"),
    ("headers-uppercase-key", "0200000000010001000141000176", "InvalidMetadataKey"),
    ("headers-newline-value", "020000000001000100016b00010a", "InvalidMetadataValue"),
    ("headers-huge-count", "020000000001ffff", "Truncated"),
    ("status-huge-details-length", "050000000001000000ffffffff0000", "Truncated"),
]


def legacy(method, payload):
    return struct.pack("<I", len(method)) + method + payload


LEGACY = [
    ("legacy-echo", "echo", "776f726c64"),
    ("legacy-dotted-empty-payload", "dispatch.create_person", ""),
    ("legacy-create-person", "create_person",
     "0a036a6f6e120b6a6f6e406a6f6e2e636f6d1a1068747470733a2f2f6a6f6e2e636f6d2f"),
]

def batch(frames):
    """A BATCH: header on stream 0, then (u16 length, frame) per entry."""
    return header_raw(0x0A, 0, 0) + b"".join(struct.pack(">H", len(f)) + f for f in frames)


def header_raw(ty, flags, stream):
    return struct.pack(">BBI", ty, flags, stream)


def frame_named(name):
    return encode(dict(FRAMES)[name])


BATCHES = [
    ("batch-two-messages", ["message-empty", "message-end-stream"]),
    ("batch-credit-ping-goaway", ["credit", "ping", "goaway-drain"]),
]

PING = frame_named("ping")
INVALID_BATCHES = [
    ("batch-empty", header_raw(0x0A, 0, 0), "EmptyBatch"),
    ("batch-on-stream-1", header_raw(0x0A, 0, 1) + struct.pack(">H", len(PING)) + PING, "NonZeroStreamId"),
    ("batch-entry-shorter-than-header", batch([PING[:4]]), "Empty"),
    ("batch-entry-past-the-end", batch([PING]) + b"\x00\x20\x08", "Truncated"),
    ("batch-odd-trailing-byte", batch([PING]) + b"\x00", "Truncated"),
    ("batch-nested", batch([batch([PING])]), "Batch"),
]

doc = {
    "description": "zrpc protocol v1 test vectors; see docs/PROTOCOL.md section 12. "
                   "Metadata values of keys ending in -bin are hex, others text.",
    "frames": [{"name": n, "hex": encode(f).hex(), "frame": f} for n, f in FRAMES],
    "invalid": [{"name": n, "hex": h, "error": e} for n, h, e in INVALID],
    "batches": [{"name": n, "hex": batch([frame_named(f) for f in fs]).hex(), "frames": fs}
                for n, fs in BATCHES],
    "invalid_batches": [{"name": n, "hex": h.hex(), "error": e} for n, h, e in INVALID_BATCHES],
    "legacy_requests": [{"name": n, "method": m, "payload_hex": p,
                         "hex": legacy(m.encode(), bytes.fromhex(p)).hex()} for n, m, p in LEGACY],
}
print(json.dumps(doc, indent=2))
