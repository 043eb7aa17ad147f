"""grpcio (the reference gRPC for Python) against a zrpc server's echo.Echo
and people.People: the four call kinds, metadata both ways, a status with
its message, a deadline, and an unimplemented method. Messages are encoded
by hand (two fields), so no generated code is needed.

Usage: python3 grpcio_client.py HOST:PORT  (PYTHONPATH=target/pydeps)
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def req(message, repeat=0):
    m = message.encode()
    b = b"\x0a" + varint(len(m)) + m
    if repeat:
        b += b"\x10" + varint(repeat)
    return b


def read_varint(b, i):
    """A varint at b[i]: (value, index after it)."""
    n, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def reply(b):
    """Decodes an EchoReply: (message, index)."""
    message, index, i = "", 0, 0
    while i < len(b):
        tag = b[i]
        i += 1
        if tag == 0x0A:
            n, i = read_varint(b, i)
            message = b[i : i + n].decode()
            i += n
        elif tag == 0x10:
            index, i = read_varint(b, i)
        else:
            raise ValueError(f"unexpected tag {tag}")
    return message, index


def check(name, cond, got=None):
    if not cond:
        print(f"FAIL {name}: {got!r}")
        sys.exit(1)
    print(f"ok {name}")


def main():
    target = sys.argv[1]
    ident = dict(request_serializer=None, response_deserializer=None)
    with grpc.insecure_channel(target) as ch:
        say = ch.unary_unary("/echo.Echo/Say", **ident)
        check("unary", reply(say(req("hi"), timeout=10)) == ("hi", 0))

        repeat = ch.unary_stream("/echo.Echo/Repeat", **ident)
        got = [reply(m) for m in repeat(req("r", 4), timeout=10)]
        check("server streaming", got == [("r", i) for i in range(4)], got)

        collect = ch.stream_unary("/echo.Echo/Collect", **ident)
        got = reply(collect(iter([req("a"), req("b"), req("c")]), timeout=10))
        check("client streaming", got == ("a b c", 3), got)

        chat = ch.stream_stream("/echo.Echo/Chat", **ident)
        got = [reply(m)[0] for m in chat(iter([req("x"), req("y")]), timeout=10)]
        check("bidi", got == ["X", "Y"], got)

        reflect = ch.unary_unary("/echo.Echo/Reflect", **ident)
        _, call = reflect.with_call(
            req("m"), metadata=[("x-token", "abc"), ("x-raw-bin", b"\x00\xff")], timeout=10
        )
        headers = dict(call.initial_metadata())
        trailers = dict(call.trailing_metadata())
        check("metadata in headers", headers.get("x-token") == "abc" and headers.get("x-raw-bin") == b"\x00\xff", headers)
        check("metadata in trailers", trailers.get("reflect-x-token") == "abc", trailers)

        try:
            say(req(""), timeout=10)
            check("status", False)
        except grpc.RpcError as e:
            check(
                "status code and message",
                e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details() == "message: must not be empty",
                (e.code(), e.details()),
            )
            details = dict(e.trailing_metadata()).get("grpc-status-details-bin", b"")
            check(
                "status details (google.rpc.Status with a BadRequest)",
                b"type.googleapis.com/google.rpc.BadRequest" in details and b"must not be empty" in details,
                details,
            )

        watch = ch.unary_stream("/people.People/WatchPeople", **ident)
        try:
            list(watch(b"", timeout=0.3))
            check("deadline", False)
        except grpc.RpcError as e:
            check("deadline", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code())

        nope = ch.unary_unary("/echo.Echo/Nope", **ident)
        try:
            nope(b"", timeout=10)
            check("unimplemented", False)
        except grpc.RpcError as e:
            check("unimplemented", e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code())


if __name__ == "__main__":
    main()
