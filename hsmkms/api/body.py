"""Reading a request's body under a size limit: one reader for the KMS API and the XKS API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def read_body(
    headers: Mapping[str, list[str]],
    receive: Receive,
    limit: int,
    too_large: Callable[[], Exception],
) -> bytes | None:
    """The body, refused unread (``too_large()`` raised) when Content-Length says it is over
    ``limit``, and counted while read (a chunked body has no Content-Length); None when the
    client went away."""
    length = headers.get("content-length")
    if length:
        try:
            declared = int(length[0])
        except ValueError:
            declared = -1
        if declared > limit:
            raise too_large()
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
