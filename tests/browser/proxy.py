"""A TCP proxy on a loopback port that can fail the way networks fail.

The browser loads the page through it, so the page's WebSocket goes through it too (the page
derives its socket's address from its own). `stall()` stops carrying bytes in both directions,
as a dead radio link does: what the page sends meanwhile never reaches the service.
`cut_clients()` then resets the browser's side (a TCP RST) and leaves the service's side open
and silent, so the service still believes the old socket is attached when the page resumes.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading


class Proxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.stalled = False
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.orphans: list[asyncio.StreamWriter] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        self.stalled = True

    def cut_clients(self) -> int:
        """Resets every browser-side connection, keeps the service-side ones; returns how
        many were cut. Carrying bytes resumes for the connections made after it."""

        async def cut():
            count = 0
            for client, upstream in self.pairs:
                sock = client.get_extra_info("socket")
                if sock is not None:
                    # Linger 0: close() sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.transport.abort()
                self.orphans.append(upstream)
                count += 1
            self.pairs.clear()
            self.stalled = False
            return count

        return self._run(cut())

    def close(self) -> None:
        async def shut():
            self.server.close()
            for client, upstream in self.pairs:
                client.transport.abort()
                upstream.transport.abort()
            for upstream in self.orphans:
                upstream.transport.abort()

        try:
            self._run(shut())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    async def _serve(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self.pairs.append(pair)
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, pair),
            self._pump(upstream_reader, client_writer, pair),
            return_exceptions=True,
        )

    async def _pump(self, reader, writer, pair):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if self.stalled or pair not in self.pairs:
                continue  # a dead link: the bytes are lost
            writer.write(data)
            await writer.drain()
        # One side finished: finish the other, unless the pair was cut on purpose.
        if pair in self.pairs:
            writer.close()
