"""``python -m bench.trivial HOST PORT``: answer every HTTP/1.1 request with a fixed
small JSON body on a keep-alive connection, doing nothing else. The load generator's rate
against it is the generator's own ceiling.

``python -m bench.trivial HOST PORT --asgi WORKERS``: the same answer from an ASGI app
served by uvicorn the way ``hsmkms serve`` serves (its HTTP protocol class, its per-worker
sockets): the ceiling of the HTTP framework, before SigV4, JSON and any KMS work."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, cast

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


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI version of the fixed answer (and a lifespan that only says yes)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/x-amz-json-1.1"),
               (b"content-length", str(len(_BODY)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})


def _serve_asgi(host: str, port: int, workers: int) -> None:
    import uvicorn

    from hsmkms.api import workers as supervisor

    config = uvicorn.Config(
        "bench.trivial:app", host=host, port=port, workers=workers,
        log_level="warning", access_log=False, lifespan="on", ws="none",
        http="hsmkms.api.protocol:GuardedHttpToolsProtocol", server_header=False,
    )  # fmt: skip
    if workers > 1 and supervisor.reuse_port_supported():
        supervisor.PerWorkerSockets(config, supervisor.bind_sockets(host, port, workers)).run()
    else:
        uvicorn.Server(config).run(sockets=[config.bind_socket()])


def main() -> None:
    if len(sys.argv) > 4 and sys.argv[3] == "--asgi":
        _serve_asgi(sys.argv[1], int(sys.argv[2]), int(sys.argv[4]))
        return
    try:
        from uvloop import new_event_loop as factory
    except ImportError:
        factory = None  # type: ignore[assignment]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
