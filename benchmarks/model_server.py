"""Fixed-delay model servers for the Answer benchmark: keep-alive HTTP/1.1, one canned chat completion.

``python benchmarks/model_server.py COUNT DELAY_S WORDS`` listens on COUNT free ports of 127.0.0.1,
prints their base URLs on one line and serves until its stdin closes. Every ``POST`` is answered after
``DELAY_S`` with the same chat completion (WORDS tokens, each with a logprob), encoded once at start, on
a connection that stays open (as vLLM's does), so that what the benchmark measures is the router and
not the test server: one request here costs a header parse, a timer and a write.
"""

from __future__ import annotations

import asyncio
import json
import sys


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


async def serve(count: int, delay_s: float, words: int) -> None:
    """Serve until stdin closes."""
    response = canned_response(words)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                await asyncio.sleep(delay_s)
                writer.write(response)
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


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])))
