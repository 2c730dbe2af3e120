"""The HTTP/1.1 wire of the test servers (embedding_server.py, fault_server.py): one request in, one response out.

Just enough HTTP for a client under test: a request line, headers and a ``Content-Length`` body; a
response with ``Connection: close``, whose ``Content-Length`` may claim more than is sent (to test a
body cut short), or a stream of server-sent events that ends when the connection closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    """One request: method, path, headers (lower-cased names) and the ``Content-Length`` body.

    ``asyncio.IncompleteReadError`` or ``ConnectionError`` if the client goes away first.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


async def write_response(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_length: int | None = None,
) -> None:
    """Write one JSON response and flush it; ``content_length`` may claim more than ``body`` (truncation)."""
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", "Connection: close"]
    lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


async def write_stream_head(writer: asyncio.StreamWriter, headers: Mapping[str, str] | None = None) -> None:
    """Write the head of a 200 server-sent-events response whose body runs until the connection closes."""
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-cache", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()


def to_json(value: object) -> bytes:
    """``value`` as a JSON body."""
    return json.dumps(value).encode()
