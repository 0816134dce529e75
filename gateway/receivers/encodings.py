"""OTLP body encodings, protobuf and JSON: one object each, chosen once per request.

As the Collector's ``receiver/otlpreceiver/encoder.go``: an encoding knows its media types, how a
request body (already decompressed, see ``compression``) becomes what ``Ingest`` hands to the
batcher (``wire.Prepared``: checked protobuf, enriched), and how the answers are written in it:
the Export*ServiceResponse (with ``partial_success`` when items were rejected) and the
``google.rpc.Status`` of a refusal. OTLP/HTTP picks one by ``Content-Type``; OTLP/gRPC is always
``PROTOBUF`` (its answers are grpc's to write).

``offload_bytes``: bodies larger than this are prepared in ``Ingest``'s worker thread, so a
large request costs its own latency, not other clients'. JSON costs about 30 times protobuf per
byte (a 400 KB request 13 ms), hence its lower threshold.

Adding an encoding is one more object here and its media types in ``ENCODINGS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2

from otlp import json_mapping, wire
from otlp.signals import Signal

Attrs = tuple[tuple[str, str], ...]

# Parsed JSON costs about 100 bytes of memory per object whatever its text: 32 MiB of "{}" would
# take gigabytes. An SDK span with its attributes is about 25 objects.
MAX_JSON_OBJECTS = 1_000_000


class Encoding(ABC):
    """One OTLP encoding: media types, request decoding and the two kinds of answer."""

    name: str
    content_type: str  # of the answers
    media_types: tuple[str, ...]  # request Content-Types (lower case, no parameters)
    offload_bytes: int

    @abstractmethod
    def prepare(self, signal: Signal, body: bytes, attrs: Attrs, max_items: int) -> wire.Prepared:
        """``wire.prepare`` of the request in this encoding: what does not check or convert is
        rejected per ResourceX (partial success); raises ``wire.WireError`` for a body with no
        structure to reject from and ``wire.TooManyItems`` past ``max_items``."""

    @abstractmethod
    def response(self, signal: Signal, rejected_items: int, message: str) -> bytes:
        """The Export*ServiceResponse of an accepted request."""

    @abstractmethod
    def status(self, st: status_pb2.Status) -> bytes:
        """A refusal's google.rpc.Status."""

    def __repr__(self) -> str:
        return f"<encoding {self.name}>"


def export_response(signal: Signal, rejected_items: int = 0, message: str = "") -> Any:
    """The Export*ServiceResponse message; ``partial_success`` only when needed."""
    resp = signal.spec.response()
    if rejected_items or message:
        setattr(resp.partial_success, signal.spec.rejected_field, rejected_items)
        resp.partial_success.error_message = message
    return resp


class _Protobuf(Encoding):
    name = "protobuf"
    content_type = "application/x-protobuf"
    media_types = ("application/x-protobuf",)
    offload_bytes = 512 * 1024

    def prepare(self, signal: Signal, body: bytes, attrs: Attrs, max_items: int) -> wire.Prepared:
        return wire.prepare(signal, body, attrs, max_items=max_items)

    def response(self, signal: Signal, rejected_items: int, message: str) -> bytes:
        out: bytes = export_response(signal, rejected_items, message).SerializeToString()
        return out

    def status(self, st: status_pb2.Status) -> bytes:
        out: bytes = st.SerializeToString()
        return out


class _Json(Encoding):
    """OTLP/JSON, turned into protobuf one ResourceX at a time (``json_mapping.json_request``),
    so a JSON value that does not fit costs only its resource, as in protobuf."""

    name = "json"
    content_type = "application/json"
    media_types = ("application/json",)
    offload_bytes = 64 * 1024

    def prepare(self, signal: Signal, body: bytes, attrs: Attrs, max_items: int) -> wire.Prepared:
        # Counted before parsing: a body holds no more objects than "{" bytes.
        objects = body.count(b"{")
        most = max(MAX_JSON_OBJECTS, 10 * max_items)
        if objects > most:
            raise wire.TooManyItems(f"OTLP/JSON request holds {objects} objects, more than {most}")
        decoded = json_mapping.json_request(signal, body)
        budget = max(0, max_items - decoded.rejected_items)
        prepared = wire.prepare(signal, decoded.payload, attrs, max_items=budget)
        if decoded.rejected_items or decoded.error:
            prepared.rejected_items += decoded.rejected_items
            prepared.error = "; ".join(e for e in (decoded.error, prepared.error) if e)
        return prepared

    def response(self, signal: Signal, rejected_items: int, message: str) -> bytes:
        return json_mapping.response_json(rejected_items, message, signal)

    def status(self, st: status_pb2.Status) -> bytes:
        text: str = json_format.MessageToJson(st, indent=None)
        return text.encode()


PROTOBUF: Encoding = _Protobuf()
JSON: Encoding = _Json()
ENCODINGS: tuple[Encoding, ...] = (PROTOBUF, JSON)
_BY_MEDIA_TYPE = {media: enc for enc in ENCODINGS for media in enc.media_types}
MEDIA_TYPES = " or ".join(_BY_MEDIA_TYPE)


def media_type(headers: Mapping[str, str]) -> str:
    """The request's Content-Type without parameters, lower case ("" when absent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def for_media_type(media: str) -> Encoding | None:
    """The encoding of a request Content-Type (see ``media_type``), None if OTLP has none."""
    return _BY_MEDIA_TYPE.get(media)


def answering(headers: Mapping[str, str]) -> Encoding:
    """The encoding to answer a request in, also one refused before its type was checked:
    the request's own, else protobuf."""
    return _BY_MEDIA_TYPE.get(media_type(headers), PROTOBUF)
