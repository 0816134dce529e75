"""Health probes that speak each service's own protocol, stdlib only.

A listening port says little (a Kafka broker listens long before it is unfenced), so Kafka is
asked for cluster metadata over its wire protocol and the HTTP services for their health APIs.
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.error
import urllib.request
from typing import Any


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET ``url``; (status, body), or (0, reason) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError) as exc:
        return 0, str(exc).encode()


def http_json(url: str, timeout: float = 3.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise OSError(f"GET {url}: {status or body.decode(errors='replace')}")
    return json.loads(body)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def _kafka_call(host: str, port: int, api_key: int, version: int, body: bytes, timeout: float) -> bytes:
    client = b"stack-probe"
    header = struct.pack(">hhih", api_key, version, 7, len(client)) + client
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        payload = _recv_exact(sock, size)
    (correlation,) = struct.unpack_from(">i", payload)
    if correlation != 7:
        raise OSError(f"kafka answered correlation id {correlation}")
    return payload[4:]


def kafka_cluster(host: str, port: int, timeout: float = 3.0) -> tuple[int, int]:
    """Ask one broker for (live broker count, active controller id) with a Metadata v4 request.

    v4 is the oldest Metadata version Kafka 4 still serves and the last before tagged fields,
    so it stays a fixed layout: throttle, brokers[id, host, port, rack], cluster id, controller.
    A broker shows up here only once the controller has unfenced it.
    """
    # topics = null (all topics), allow_auto_topic_creation = false
    resp = _kafka_call(host, port, api_key=3, version=4, body=struct.pack(">ib", -1, 0), timeout=timeout)
    pos = 4  # throttle_time_ms
    (brokers,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(brokers):
        pos += 4  # node_id
        (host_len,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + host_len + 4  # host, port
        (rack_len,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + max(rack_len, 0)
    (cluster_len,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + max(cluster_len, 0)
    (controller,) = struct.unpack_from(">i", resp, pos)
    return brokers, controller
