"""``python -m hsmkms.bench.trivial HOST PORT``: answer every HTTP/1.1 request with a fixed
small JSON body on a keep-alive connection, doing nothing else. The load generator's rate
against it is the generator's own ceiling."""

from __future__ import annotations

import asyncio
import sys
from typing import cast

_BODY = b'{"Plaintext":"AAAAAAAAAAA="}'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            assert self.transport is not None
            self.transport.write(_ANSWER)


async def _serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Protocol, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    try:
        from uvloop import new_event_loop as factory
    except ImportError:
        factory = None  # type: ignore[assignment]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
