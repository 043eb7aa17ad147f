"""gRPC's interop cases (grpc/grpc doc/interop-test-descriptions.md) with grpcio,
the reference gRPC for Python, against `zrpc serve --interop`: the same cases as
clients/js/test/interop/cases.ts, for the same table. Message classes are built
at run time from the interop protos' descriptors (compiled here by the protobuf
package's own descriptor pool from a FileDescriptorSet that `buf build` wrote),
so no generated code is checked in.

Usage: python3 grpcio_interop.py HOST:PORT DESCRIPTORS.binpb  (PYTHONPATH=target/pydeps)
Prints a JSON object {case: "pass" | "n/a" | "FAIL: ..."} and exits 0.
"""

import json
import sys
import threading

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

target, descriptors = sys.argv[1], sys.argv[2]
fds = descriptor_pb2.FileDescriptorSet.FromString(open(descriptors, "rb").read())
pool = descriptor_pool.DescriptorPool()
for f in fds.file:
    pool.Add(f)
M = {
    name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.testing.{name}"))
    for name in [
        "Empty",
        "SimpleRequest",
        "SimpleResponse",
        "StreamingInputCallRequest",
        "StreamingInputCallResponse",
        "StreamingOutputCallRequest",
        "StreamingOutputCallResponse",
    ]
}


def stub(channel, kind, method, req, res, service="TestService"):
    make = getattr(channel, kind)
    return make(
        f"/grpc.testing.{service}/{method}",
        request_serializer=M[req].SerializeToString,
        response_deserializer=M[res].FromString,
    )


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def zeros(n):
    return {"body": bytes(n)}


def fails_with(fn, code, message=None):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"code: got {e.code()}, want {code} ({e.details()})")
        if message is not None:
            check(e.details() == message, f"message: got {e.details()!r}, want {message!r}")
        return
    raise AssertionError(f"succeeded, want {code}")


INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


def large_unary(ch):
    unary = stub(ch, "unary_unary", "UnaryCall", "SimpleRequest", "SimpleResponse")
    r = unary(M["SimpleRequest"](response_size=314159, payload=zeros(271828)), timeout=30)
    check(len(r.payload.body) == 314159, "response payload size")


def client_streaming(ch):
    call = stub(ch, "stream_unary", "StreamingInputCall", "StreamingInputCallRequest", "StreamingInputCallResponse")
    reqs = (M["StreamingInputCallRequest"](payload=zeros(n)) for n in [27182, 8, 1828, 45904])
    check(call(reqs, timeout=30).aggregated_payload_size == 74922, "aggregated payload size")


def server_streaming(ch):
    call = stub(ch, "unary_stream", "StreamingOutputCall", "StreamingOutputCallRequest", "StreamingOutputCallResponse")
    sizes = [31415, 9, 2653, 58979]
    req = M["StreamingOutputCallRequest"](response_parameters=[{"size": n} for n in sizes])
    got = [len(m.payload.body) for m in call(req, timeout=30)]
    check(got == sizes, f"response sizes: {got}")


class Requests:
    """A request iterator fed from this thread: each request after the previous reply."""

    def __init__(self):
        self.cond = threading.Condition()
        self.items = []
        self.ended = False

    def push(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify()

    def end(self):
        with self.cond:
            self.ended = True
            self.cond.notify()

    def __iter__(self):
        return self

    def __next__(self):
        with self.cond:
            while not self.items and not self.ended:
                self.cond.wait()
            if self.items:
                return self.items.pop(0)
            raise StopIteration


def duplex(ch, **kw):
    call = stub(ch, "stream_stream", "FullDuplexCall", "StreamingOutputCallRequest", "StreamingOutputCallResponse")
    reqs = Requests()
    return reqs, call(reqs, **kw)


def ping_pong(ch):
    reqs, call = duplex(ch, timeout=30)
    for resp, req in [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]:
        reqs.push(M["StreamingOutputCallRequest"](response_parameters=[{"size": resp}], payload=zeros(req)))
        check(len(next(call).payload.body) == resp, "response size")
    reqs.end()
    check(next(call, None) is None, "the end after the last pair")


def empty_stream(ch):
    reqs, call = duplex(ch, timeout=30)
    reqs.end()
    check(next(call, None) is None, "no response")


def custom_metadata(ch):
    unary = stub(ch, "unary_unary", "UnaryCall", "SimpleRequest", "SimpleResponse")
    _, call = unary.with_call(
        M["SimpleRequest"](response_size=314159, payload=zeros(271828)), metadata=[INITIAL, TRAILING], timeout=30
    )
    check(INITIAL in call.initial_metadata(), f"initial metadata: {call.initial_metadata()}")
    check(TRAILING in call.trailing_metadata(), f"trailing metadata: {call.trailing_metadata()}")
    reqs, call = duplex(ch, metadata=[INITIAL, TRAILING], timeout=30)
    reqs.push(M["StreamingOutputCallRequest"](response_parameters=[{"size": 314159}], payload=zeros(271828)))
    check(len(next(call).payload.body) == 314159, "duplex: response size")
    reqs.end()
    check(next(call, None) is None, "duplex: the end")
    check(INITIAL in call.initial_metadata(), "duplex: initial metadata")
    check(TRAILING in call.trailing_metadata(), "duplex: trailing metadata")


def status_code_and_message(ch):
    unary = stub(ch, "unary_unary", "UnaryCall", "SimpleRequest", "SimpleResponse")
    status = {"code": 2, "message": "test status message"}
    fails_with(lambda: unary(M["SimpleRequest"](response_status=status), timeout=30), grpc.StatusCode.UNKNOWN, "test status message")
    reqs, call = duplex(ch, timeout=30)
    reqs.push(M["StreamingOutputCallRequest"](response_status=status))
    reqs.end()
    fails_with(lambda: next(call), grpc.StatusCode.UNKNOWN, "test status message")


def special_status_message(ch):
    unary = stub(ch, "unary_unary", "UnaryCall", "SimpleRequest", "SimpleResponse")
    req = M["SimpleRequest"](response_status={"code": 2, "message": SPECIAL})
    fails_with(lambda: unary(req, timeout=30), grpc.StatusCode.UNKNOWN, SPECIAL)


def unimplemented_method(ch):
    call = stub(ch, "unary_unary", "UnimplementedCall", "Empty", "Empty")
    fails_with(lambda: call(M["Empty"](), timeout=30), grpc.StatusCode.UNIMPLEMENTED)


def unimplemented_service(ch):
    call = stub(ch, "unary_unary", "UnimplementedCall", "Empty", "Empty", service="UnimplementedService")
    fails_with(lambda: call(M["Empty"](), timeout=30), grpc.StatusCode.UNIMPLEMENTED)


def cancel_after_begin(ch):
    call = stub(ch, "stream_unary", "StreamingInputCall", "StreamingInputCallRequest", "StreamingInputCallResponse")
    reqs = Requests()
    future = call.future(reqs, timeout=30)
    future.cancel()
    reqs.end()
    check(future.cancelled(), "the call was not cancelled")
    check(future.code() == grpc.StatusCode.CANCELLED, f"code: {future.code()}")


def cancel_after_first_response(ch):
    reqs, call = duplex(ch, timeout=30)
    reqs.push(M["StreamingOutputCallRequest"](response_parameters=[{"size": 31415}], payload=zeros(27182)))
    check(len(next(call).payload.body) == 31415, "first response size")
    call.cancel()
    fails_with(lambda: next(call), grpc.StatusCode.CANCELLED)
    reqs.end()


def timeout_on_sleeping_server(ch):
    reqs, call = duplex(ch, timeout=0.001)
    reqs.push(M["StreamingOutputCallRequest"](payload=zeros(27182)))
    fails_with(lambda: next(call), grpc.StatusCode.DEADLINE_EXCEEDED)
    reqs.end()


def empty_unary(ch):
    call = stub(ch, "unary_unary", "EmptyCall", "Empty", "Empty")
    check(call(M["Empty"](), timeout=30) == M["Empty"](), "an empty response")


CASES = [
    ("empty_unary", empty_unary, False),
    ("large_unary", large_unary, False),
    ("client_streaming", client_streaming, False),
    ("server_streaming", server_streaming, False),
    ("ping_pong", ping_pong, False),
    ("empty_stream", empty_stream, False),
    ("custom_metadata", custom_metadata, False),
    ("status_code_and_message", status_code_and_message, False),
    ("special_status_message", special_status_message, False),
    ("unimplemented_method", unimplemented_method, False),
    ("unimplemented_service", unimplemented_service, False),
    ("cancel_after_begin", cancel_after_begin, False),
    ("cancel_after_first_response", cancel_after_first_response, False),
    ("timeout_on_sleeping_server", timeout_on_sleeping_server, False),
    ("large_unary (gzip)", large_unary, True),
    ("client_streaming (gzip)", client_streaming, True),
    ("server_streaming (gzip)", server_streaming, True),
    ("ping_pong (gzip)", ping_pong, True),
]

out = {}
for name, run, gzip in CASES:
    compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    with grpc.insecure_channel(target, compression=compression) as ch:
        try:
            run(ch)
            out[name] = "pass"
        except Exception as e:  # noqa: BLE001 - every failure is a row of the table
            out[name] = f"FAIL: {type(e).__name__}: {e}"
print(json.dumps(out))
