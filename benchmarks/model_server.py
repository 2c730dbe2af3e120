"""Fixed-delay model servers for the Answer and gateway benchmarks: keep-alive HTTP/1.1, one canned chat
completion.

``python benchmarks/model_server.py COUNT DELAY_S WORDS [TOKEN_DELAY_S]`` listens on COUNT free ports of
127.0.0.1, prints their base URLs on one line and serves until its stdin closes. Every ``POST`` is
answered after ``DELAY_S`` with the same chat completion (WORDS tokens, each with a logprob), encoded
once at start, on a connection that stays open (as vLLM's does), so that what the benchmark measures is
the router and not the test server: one request here costs a header parse, a timer and a write. A
request whose body asks ``"stream":true`` (compact JSON, as smcs and the benchmark send it) gets the same
completion as server-sent events in HTTP chunks, as vLLM streams: the first token after ``DELAY_S``, each
next one ``TOKEN_DELAY_S`` later (default 0: written back to back, each flushed), then the finish
reason, the usage and ``[DONE]``. ``running(...)`` starts it from a benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

STREAM_MARKER = b'"stream":true'


def canned_response(words: int) -> bytes:
    """The whole HTTP response: a chat completion of ``words`` tokens with their logprobs."""
    tokens = ["word "] * (words - 1) + ["word"]
    body = json.dumps({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(tokens)},
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": t, "logprob": -0.01 * (i + 1), "top_logprobs": []} for i, t in enumerate(tokens)]},
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words},
    }).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


def canned_stream(words: int) -> tuple[bytes, list[bytes]]:
    """The head of a streamed answer and its HTTP chunks: one per token (with its logprob), the finish, the
    usage, ``[DONE]`` and the last, empty chunk."""
    tokens = ["word "] * (words - 1) + ["word"]
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "bench"}

    def event(value: object) -> bytes:
        data = b"data: " + (value if isinstance(value, bytes) else json.dumps(value).encode()) + b"\n\n"
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    chunks = []
    for i, token in enumerate(tokens):
        delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
        logprobs = {"content": [{"token": token, "logprob": -0.01 * (i + 1), "top_logprobs": []}]}
        chunks.append(event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}]}))
    chunks.append(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    chunks.append(event({**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}}))
    chunks.append(event(b"[DONE]") + b"0\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head, chunks


async def serve(count: int, delay_s: float, words: int, token_delay_s: float = 0.0) -> None:
    """Serve until stdin closes."""
    response = canned_response(words)
    stream_head, stream_chunks = canned_stream(words)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                await asyncio.sleep(delay_s)
                if STREAM_MARKER not in body:
                    writer.write(response)
                    await writer.drain()
                    continue
                writer.write(stream_head)
                for i, chunk in enumerate(stream_chunks):
                    if i and token_delay_s > 0 and i < words:
                        await asyncio.sleep(token_delay_s)
                    writer.write(chunk)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(count)]
    print(" ".join(f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


@contextlib.contextmanager
def running(count: int, delay_s: float, words: int, token_delay_s: float = 0.0) -> Iterator[list[str]]:
    """The base URLs of ``count`` of these servers, run in a subprocess that stops at the end."""
    command = [sys.executable, __file__, str(count), str(delay_s), str(words), str(token_delay_s)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0))
