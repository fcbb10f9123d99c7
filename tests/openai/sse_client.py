"""A minimal asyncio HTTP/1.1 client for catserve's OpenAI API: one request per connection, the
answer read as server-sent events (chunked transfer encoding decoded by hand).

Raw sockets rather than httpx or aiohttp: hundreds of concurrent streams cost the client little
CPU (it shares the machine with the daemon it measures), and closing a stream is a plain close of
its TCP connection, nothing pooled or kept alive behind the test's back.

    events = await post_stream("127.0.0.1", port, {"prompt": "Hi", "stream": True})
    async with SseStream(host, port, body) as stream:      # or read event by event
        async for event in stream: ...                      # leaving early closes the socket
"""

import asyncio
import json


class HttpError(Exception):
    """A non-200 answer: its status, headers and body."""

    def __init__(self, status, headers, body):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status, self.headers, self.body = status, headers, body


def _request_bytes(host, port, path, body, token):
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(payload)}", "Accept: text/event-stream", "Connection: close"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _read_head(reader):
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection before answering")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(reader, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        async for piece in _chunks(reader):
            out += piece
        return out
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


async def _chunks(reader):
    """The pieces of a chunked body, as they arrive."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise ConnectionError("the stream ended without its last chunk")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readline()  # the empty trailer
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF
        yield data


class SseStream:
    """One streamed POST; iterate for the events' data (parsed JSON, or the string "[DONE]").
    Raises HttpError when the answer is not 200. Closing (or leaving the `async with`) closes the
    connection, which is how a client hangs up on a stream."""

    def __init__(self, host, port, body, path="/v1/completions", token=None, local_addr=None):
        self.host, self.port, self.body, self.path = host, port, body, path
        self.token, self.local_addr = token, local_addr
        self.writer = None

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=self.local_addr)
        self.writer.write(_request_bytes(self.host, self.port, self.path, self.body, self.token))
        await self.writer.drain()
        self.status, self.headers = await _read_head(self.reader)
        if self.status != 200:
            body = await _read_body(self.reader, self.headers)
            self.close()
            raise HttpError(self.status, self.headers, body.decode(errors="replace"))
        return self

    async def __aexit__(self, *exc):
        self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def __aiter__(self):
        chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        source = _chunks(self.reader) if chunked else _raw(self.reader)
        pending = b""
        async for piece in source:
            pending += piece
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if line.startswith(b"data: "):
                        data = line[6:].decode()
                        yield data if data == "[DONE]" else json.loads(data)


async def _raw(reader):
    while True:
        data = await reader.read(65536)
        if not data:
            return
        yield data


async def post_stream(host, port, body, **kwargs):
    """Every event of one streamed request, [DONE] included."""
    async with SseStream(host, port, body, **kwargs) as stream:
        return [event async for event in stream]


async def post_json(host, port, body, path="/v1/completions", token=None):
    """(status, headers, parsed JSON body) of one unstreamed POST."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_request_bytes(host, port, path, body, token))
        await writer.drain()
        status, headers = await _read_head(reader)
        return status, headers, json.loads(await _read_body(reader, headers))
    finally:
        writer.close()
