"""Senders: push pre-serialized OTLP bytes over gRPC or HTTP/protobuf as cheaply as possible.

The generator shares two cores with the system under test, so every CPU cycle it spends is
one the target does not get. gRPC goes through ``grpc.aio`` with identity (de)serializers, so
no protobuf work happens per request; HTTP uses aiohttp when it is installed, else a
minimal keep-alive HTTP/1.1 client on asyncio streams. A send answers ``(accepted_items,
error)``: ``error`` is ``None`` on success, else a short reason that names the status, which
is how the progress line and the report group failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from otlp.signals import Signal

GRPC_METHODS = {s: s.spec.grpc_path for s in Signal}


def rejected_items(signal: Signal, response: bytes) -> int:
    """Items the server refused in an OK answer (OTLP ``partial_success``); 0 for an empty body."""
    if not response:
        return 0
    try:
        partial = signal.spec.response.FromString(response).partial_success
        return int(getattr(partial, signal.spec.rejected_field))
    except Exception:  # a non-protobuf body on success (e.g. JSON "{}") refuses nothing
        return 0


class Sender(Protocol):
    async def start(self) -> None: ...

    async def send(self, data: bytes, items: int) -> tuple[int, str | None]: ...

    async def close(self) -> None: ...


def _identity(b: bytes) -> bytes:
    return b


def client_ssl(tls_ca_file: str) -> ssl.SSLContext | None:
    """A client context trusting ``tls_ca_file`` (the bench's TLS rounds), else None (plaintext)."""
    return ssl.create_default_context(cafile=tls_ca_file) if tls_ca_file else None


class GrpcSender:
    """Round-robins requests over ``connections`` channels, each its own HTTP/2 connection.

    Several connections matter when the target runs several worker processes behind
    SO_REUSEPORT: the kernel spreads connections, not requests. ``tls_ca_file``: TLS, trusting it.
    """

    def __init__(self, target: str, signal: Signal, *, connections: int = 2, timeout_s: float = 30.0,
                 headers: Mapping[str, str] | None = None, tls_ca_file: str = "") -> None:
        # Read now, before the load starts (and outside the event loop).
        self._root_ca = Path(tls_ca_file).read_bytes() if tls_ca_file else None
        self._target = target
        self._signal = signal
        self._n = max(1, connections)
        self._timeout = timeout_s
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items()) or None
        self._channels: list[Any] = []
        self._calls: list[Any] = []
        self._next = 0

    async def start(self) -> None:
        import grpc

        opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                ("grpc.use_local_subchannel_pool", 1)]
        creds = grpc.ssl_channel_credentials(root_certificates=self._root_ca) if self._root_ca else None
        for _ in range(self._n):
            ch = (grpc.aio.secure_channel(self._target, creds, options=opts) if creds is not None
                  else grpc.aio.insecure_channel(self._target, options=opts))
            self._channels.append(ch)
            self._calls.append(ch.unary_unary(GRPC_METHODS[self._signal], request_serializer=_identity,
                                              response_deserializer=_identity))
        for ch in self._channels:
            await asyncio.wait_for(ch.channel_ready(), self._timeout)

    async def send(self, data: bytes, items: int) -> tuple[int, str | None]:
        import grpc

        call = self._calls[self._next]
        self._next = (self._next + 1) % self._n
        try:
            resp = await call(data, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            return 0, f"grpc {exc.code().name}"
        return items - rejected_items(self._signal, resp), None

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()


class AiohttpSender:
    def __init__(self, base_url: str, signal: Signal, *, connections: int = 64, timeout_s: float = 30.0,
                 headers: Mapping[str, str] | None = None, tls_ca_file: str = "") -> None:
        self._ssl = client_ssl(tls_ca_file)
        self._url = f"{base_url.rstrip('/')}/v1/{signal.value}"
        self._signal = signal
        self._limit = connections
        self._timeout = timeout_s
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self._session: Any = None

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, force_close=False, ssl=self._ssl or True),
            timeout=aiohttp.ClientTimeout(total=self._timeout), headers=self._headers,
            skip_auto_headers=("User-Agent",))

    async def send(self, data: bytes, items: int) -> tuple[int, str | None]:
        try:
            async with self._session.post(self._url, data=data) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return 0, f"http {resp.status}"
        except (TimeoutError, OSError) as exc:
            return 0, f"http {type(exc).__name__}"
        except Exception as exc:  # aiohttp.ClientError and friends: the server went away mid-request
            return 0, f"http {type(exc).__name__}"
        return items - rejected_items(self._signal, body), None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class RawHttpSender:
    """Keep-alive HTTP/1.1 over asyncio streams; one request per connection at a time.

    Enough HTTP for an OTLP server's answers: a status line, headers, and a body framed by
    Content-Length or chunked encoding. Connections are pooled and reopened after an error.
    """

    def __init__(self, base_url: str, signal: Signal, *, connections: int = 64, timeout_s: float = 30.0,
                 headers: Mapping[str, str] | None = None, tls_ca_file: str = "") -> None:
        self._ssl = client_ssl(tls_ca_file)
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._signal = signal
        self._timeout = timeout_s
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = (f"POST /v1/{signal.value} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                      f"Content-Type: application/x-protobuf\r\n{extra}Content-Length: ").encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def start(self) -> None:
        self._idle.append(await asyncio.open_connection(self._host, self._port, ssl=self._ssl))

    async def send(self, data: bytes, items: int) -> tuple[int, str | None]:
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(self._host, self._port, ssl=self._ssl),
                                              self._timeout)
            status, body, keep = await asyncio.wait_for(self._roundtrip(conn, data), self._timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if conn is not None:
                conn[1].close()
            return 0, f"http {type(exc).__name__}"
        if keep:
            self._idle.append(conn)
        else:
            conn[1].close()
        if status != 200:
            return 0, f"http {status}"
        return items - rejected_items(self._signal, body), None

    async def _roundtrip(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                         data: bytes) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(self._head + str(len(data)).encode() + b"\r\n\r\n")
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        return await read_response(reader, head)

    async def close(self) -> None:
        for _, w in self._idle:
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
        self._idle.clear()


async def read_response(reader: asyncio.StreamReader, head: bytes) -> tuple[int, bytes, bool]:
    """Parse a response head already read up to the blank line, then read its body."""
    lines = head.decode("latin-1").split("\r\n")
    version, status_text = lines[0].split(" ", 2)[:2]
    status = int(status_text)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(chunks), keep
    length = int(headers.get("content-length", "0"))
    return status, (await reader.readexactly(length)) if length else b"", keep


def make_sender(transport: str, *, grpc_target: str, http_url: str, signal: Signal, connections: int,
                timeout_s: float, http_client: str = "auto",
                headers: Mapping[str, str] | None = None, tls_ca_file: str = "") -> Sender:
    if transport == "grpc":
        return GrpcSender(grpc_target, signal, connections=connections, timeout_s=timeout_s, headers=headers,
                          tls_ca_file=tls_ca_file)
    if http_client == "auto":
        try:
            import aiohttp  # noqa: F401
            http_client = "aiohttp"
        except ImportError:
            http_client = "raw"
    cls = AiohttpSender if http_client == "aiohttp" else RawHttpSender
    return cls(http_url, signal, connections=connections, timeout_s=timeout_s, headers=headers,
               tls_ca_file=tls_ca_file)
