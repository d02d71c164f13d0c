"""Opens N keep-alive connections to HOST:PORT, makes one request on each, then holds them
idle until killed. Prints 'ready N' once all are open and answered and have then been idle
for SETTLE seconds (optional 4th argument, default 5: longer than the gateway's
`server.park_idle_ms` plus its 2 s allocator trim round, so what is measured is the idle
state, parked; 0 prints at once).

With a 5th argument `h2c`, each connection speaks HTTP/2 with prior knowledge (the gateway
needs `server.h2c = true`): the preface, an empty SETTINGS, one POST on stream 1, then it
acknowledges the server's SETTINGS and PINGs while it waits. (An HTTP/2 connection without a
stream is closed after `limits.header_read_timeout_ms`; read the memory before that.)"""
import asyncio
import struct
import sys

PATH = b"/api/v2/chats/0000000000000000/messages"
REQ = (b"POST " + PATH + b" HTTP/1.1\r\nHost: bench\r\n"
       b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


async def one(host, port, held):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(REQ)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    held.append(writer)


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """HPACK: a literal header field without indexing (name: its static-table index, already
    encoded with the 4-bit prefix), the value short and not Huffman-coded."""
    return name + bytes([len(value)]) + value


# :method POST (3), :scheme http (6) indexed; :path (4), :authority (1), content-type (31,
# 15 + 16 past the 4-bit prefix) literal.
H2_HEADERS = (b"\x83\x86" + literal(b"\x04", PATH) + literal(b"\x01", b"bench")
              + literal(b"\x0f\x10", b"application/json"))


async def one_h2(host, port, held):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)
                 + frame(1, 4, 1, H2_HEADERS) + frame(0, 1, 1, b"{}"))
    await writer.drain()
    ended = False
    while not ended:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if kind == 4 and not flags & 1:
            writer.write(frame(4, 1, 0))
        ended = stream == 1 and kind in (0, 1) and flags & 1
    held.append(writer)

    async def answer_pings():
        try:
            while True:
                head = await reader.readexactly(9)
                length = int.from_bytes(head[:3], "big")
                payload = await reader.readexactly(length)
                if head[3] == 6 and not head[4] & 1:
                    writer.write(frame(6, 1, 0, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    asyncio.ensure_future(answer_pings())


async def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    settle = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    connect = one_h2 if len(sys.argv) > 5 and sys.argv[5] == "h2c" else one
    held = []
    sem = asyncio.Semaphore(500)

    async def guarded():
        async with sem:
            await connect(host, port, held)

    await asyncio.gather(*(guarded() for _ in range(n)))
    await asyncio.sleep(settle)
    print(f"ready {len(held)}", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
