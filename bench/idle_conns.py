"""Opens N keep-alive connections to HOST:PORT, makes one request on each, then holds them
idle until killed. Prints 'ready N' once all are open and answered and have then been idle
for SETTLE seconds (optional 4th argument, default 3: longer than the gateway's
`server.park_idle_ms`, so what is measured is the idle state, parked; 0 prints at once)."""
import asyncio
import sys

REQ = (b"POST /api/v2/chats/0000000000000000/messages HTTP/1.1\r\nHost: bench\r\n"
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


async def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    settle = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
    held = []
    sem = asyncio.Semaphore(500)

    async def guarded():
        async with sem:
            await one(host, port, held)

    await asyncio.gather(*(guarded() for _ in range(n)))
    await asyncio.sleep(settle)
    print(f"ready {len(held)}", flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
