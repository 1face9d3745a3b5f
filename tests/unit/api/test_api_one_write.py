"""A response leaves in one write (api/protocol.py): its head is held until its body, and
nothing that must go out alone waits for a body that never comes."""

from __future__ import annotations

import json
import socket


def exchange(server, request: bytes, *, then: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send ``request``; if ``then``, send it after the first answer; read until idle."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = sock.recv(65536)
        if then:
            sock.sendall(then)
            data += sock.recv(65536)
        sock.settimeout(0.3)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        return data


def test_a_head_request_gets_its_head_though_there_is_no_body(server):
    answer = exchange(server, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\n")


def test_two_requests_on_one_connection_get_two_whole_answers(server):
    one = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(server, one, then=one)
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert answer.count(b'{"ok":true}') == 2  # /health's answer to anyone (api/operator.py)


def test_100_continue_is_sent_before_the_body_arrives(server):
    body = json.dumps({"NumberOfBytes": 8}).encode()
    headers = server.signed_headers("GenerateRandom", body)
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    answer = exchange(server, head.encode(), then=body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
