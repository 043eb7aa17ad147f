#!/usr/bin/env python3
"""A legacy zrpc client as the seed's own clients spoke it (NOTES.md): one
WebSocket per call, no subprotocol, the request `<I` name length | name |
payload, then every reply until the server closes the connection.

Usage: seed_echo_client.py URL METHOD PAYLOAD
Prints each reply on a line, then `closed CODE`; exits 0 on a normal close.
Needs the `websockets` package (scripts/setup-python.sh installs it locally).
"""
import asyncio
import struct
import sys

import websockets


async def main(url, method, payload):
    name = method.encode()
    async with websockets.connect(url) as ws:
        await ws.send(struct.pack("<I", len(name)) + name + payload)
        try:
            while True:
                msg = await ws.recv()
                text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
                if text == "CLOSE":  # the seed README's older end-of-stream variant
                    break
                print(text, flush=True)
        except websockets.ConnectionClosed:
            pass
    code = ws.close_code
    print(f"closed {code}", flush=True)
    return 0 if code in (1000, None) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3].encode())))
