#!/usr/bin/env python3
"""The seed's Titan client, rebuilt from its description (NOTES.md): one
WebSocket, no subprotocol, the request `<I` name length | name | serialized
Person, then binary Person replies (and possibly text) until the server
closes. Person is the seed's proto3 message, built here with the `protobuf`
package from a descriptor (no protoc needed).

Usage: seed_titan_client.py URL METHOD NAME EMAIL URL_FIELD
Prints each stored Person as `person ID NAME EMAIL URL LABEL`, then `closed CODE`.
"""
import asyncio
import struct
import sys

import websockets
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def person_class():
    f = descriptor_pb2.FileDescriptorProto(name="titan.proto", syntax="proto3")
    m = f.message_type.add(name="Person")
    string, int32 = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_INT32
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    for number, name, kind in [(1, "name", string), (2, "email", string), (3, "url", string), (4, "id", int32), (5, "label", string)]:
        m.field.add(name=name, number=number, type=kind, label=optional)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("Person"))


async def main(url, method, name, email, url_field):
    Person = person_class()
    person = Person(name=name, email=email, url=url_field)
    blob = person.SerializeToString()
    method = method.encode()
    async with websockets.connect(url) as ws:
        await ws.send(struct.pack("<I", len(method)) + method + blob)
        try:
            while True:
                msg = await ws.recv()
                if isinstance(msg, str):
                    print(f"text {msg}", flush=True)
                    continue
                p = Person()
                p.ParseFromString(msg)
                print(f"person {p.id} {p.name} {p.email} {p.url} {p.label}", flush=True)
        except websockets.ConnectionClosed:
            pass
    print(f"closed {ws.close_code}", flush=True)
    return 0 if ws.close_code == 1000 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:6])))
