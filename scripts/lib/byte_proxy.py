#!/usr/bin/env python3
"""A TCP proxy that counts the bytes it carries: what a metered uplink bills.

    byte_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT COUNTS_FILE

Every connection accepted on 127.0.0.1:LISTEN_PORT is forwarded to the target. COUNTS_FILE is
rewritten every 200 ms and at exit (SIGTERM, SIGINT) with one line:
`upstream=BYTES downstream=BYTES connections=N`, upstream being client -> target. A Kafka-API
broker behind it must advertise LISTEN_PORT, so that the client's connections to the broker it
learns from metadata pass here too.
"""

import asyncio
import os
import signal
import sys

counts = {"upstream": 0, "downstream": 0, "connections": 0}


def write_counts(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(
            f"upstream={counts['upstream']} downstream={counts['downstream']} "
            f"connections={counts['connections']}\n"
        )
    os.replace(tmp, path)


async def pipe(reader, writer, direction):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            counts[direction] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(listen_port, target_host, target_port, path):
    async def handle(client_reader, client_writer):
        counts["connections"] += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, server_writer, "upstream"),
            pipe(server_reader, client_writer, "downstream"),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            write_counts(path)
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
    write_counts(path)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    host, port = sys.argv[2].rsplit(":", 1)
    asyncio.run(serve(int(sys.argv[1]), host, int(port), sys.argv[3]))


if __name__ == "__main__":
    main()
