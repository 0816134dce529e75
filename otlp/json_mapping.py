"""The OTLP/JSON mapping <-> protobuf bytes.

OTLP/JSON is the proto3 JSON mapping with one twist: trace and span ids are hex strings, not
base64 (enums as ints, int64 as string or number and lowerCamelCase are plain proto3 JSON).
Both directions go straight between JSON documents and wire bytes with small converters
compiled from the opentelemetry-proto descriptors: ``json_format`` does the same through upb
message objects field by field in Python, which is 5-10x slower. Everything after the
receiver handles protobuf bytes like any other request. Unknown JSON fields are ignored, as
the OTLP spec asks of receivers.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor as FD
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from otlp.signals import Signal
from otlp.wire import WireError, encode_varint, read_varint

__all__ = ["JsonRequest", "json_request", "json_to_proto", "proto_to_json", "response_json"]


# --- JSON -> protobuf bytes, driven by the message descriptors ---------------------------------
#
# json_format.ParseDict builds upb messages field by field in Python (~200 ms for a 512-span
# request). Encoding the parsed JSON straight to wire bytes, with one small encoder compiled
# per message type, does the same job several times faster and yields the same bytes as
# upb's serializer (fields in number order, proto3 defaults omitted, packed repeated scalars).

_KV_DESC = KeyValue.DESCRIPTOR
# Id fields written as hex in OTLP/JSON, with their length in bytes (empty is allowed too).
_HEX_ID_FIELDS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_MASK64 = (1 << 64) - 1
_INT_RANGES = {
    FD.TYPE_INT32: (-(1 << 31), (1 << 31) - 1), FD.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FD.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1), FD.TYPE_UINT32: (0, (1 << 32) - 1),
    FD.TYPE_FIXED32: (0, (1 << 32) - 1), FD.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1), FD.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FD.TYPE_UINT64: (0, _MASK64), FD.TYPE_FIXED64: (0, _MASK64),
}
_FIXED = {FD.TYPE_FIXED64: "Q", FD.TYPE_SFIXED64: "q", FD.TYPE_DOUBLE: "d",
          FD.TYPE_FIXED32: "I", FD.TYPE_SFIXED32: "i", FD.TYPE_FLOAT: "f"}
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class _PathError(Exception):
    """A JSON value that does not fit its field; ``path`` grows as the error travels up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        out = ""
        for part in reversed(self.path):
            out += part if part.startswith("[") or not out else "." + part
        return out or "(top level)"


def _to_int(v: Any, ftype: int) -> int:
    if type(v) is int:
        n = v
    elif isinstance(v, str):
        try:
            n = int(v)
        except ValueError:
            raise _PathError(f"{v[:40]!r} is not an integer") from None
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    else:
        raise _PathError(f"{v!r} is not an integer")
    lo, hi = _INT_RANGES[ftype]
    if not lo <= n <= hi:
        raise _PathError(f"{n} is out of range")
    return n


def _to_float(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        word = _FLOAT_WORDS.get(v)
        if word is not None:
            return word
        try:
            return float(v)
        except ValueError:
            pass
    raise _PathError(f"{v!r} is not a number")


def _to_bytes(v: Any, id_size: int) -> bytes:
    if not isinstance(v, str):
        raise _PathError(f"{v!r} is not a string")
    if id_size:
        if v and len(v) != 2 * id_size:
            raise _PathError(f"{v[:40]!r} is not a hex-encoded id of {id_size} bytes")
        try:
            return bytes.fromhex(v)
        except ValueError:
            raise _PathError(f"{v[:40]!r} is not a hex-encoded id") from None
    try:
        return base64.b64decode(v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4), validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        raise _PathError(f"{v[:40]!r} is not base64") from None


class _MessageEncoder:
    """JSON object -> body of one message type; one per descriptor, shared via a cache."""

    __slots__ = ("by_name", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.by_name: dict[str, tuple[int, Callable[[Any], bytes | None]]] = {}

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, dict):
            raise _PathError(f"expected a JSON object for {self.name}, got {type(obj).__name__}")
        parts: list[tuple[int, bytes]] = []
        last = 0
        ordered = True
        by_name = self.by_name
        for key, value in obj.items():
            entry = by_name.get(key)
            if entry is None or value is None:
                continue  # unknown fields are ignored, null means absent
            num, enc = entry
            try:
                data = enc(value)
            except _PathError as e:
                e.path.append(key)
                raise
            if data is None:
                continue
            if num < last:
                ordered = False
            last = num
            parts.append((num, data))
        if not ordered:
            parts.sort(key=lambda p: p[0])
        return b"".join([p[1] for p in parts])


_ENCODERS: dict[str, _MessageEncoder] = {}


def _json_encoder(desc: Any) -> _MessageEncoder:
    found = _ENCODERS.get(desc.full_name)
    if found is not None:
        return found
    me = _ENCODERS[desc.full_name] = _MessageEncoder(desc.full_name)
    for f in desc.fields:
        entry = (f.number, _field_encoder(f))
        me.by_name[f.json_name] = entry
        me.by_name[f.name] = entry
    return me


def _scalar(f: Any) -> tuple[Callable[[Any], Any], Callable[[Any], bytes], int]:
    """(JSON value -> Python value, Python value -> raw wire value, wire type) for a scalar field."""
    t = f.type
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        fmt = "<" + _FIXED[t]
        return _to_float, struct.Struct(fmt).pack, 1 if t == FD.TYPE_DOUBLE else 5
    if t in _FIXED:
        fmt = "<" + _FIXED[t]
        return (lambda v: _to_int(v, t)), struct.Struct(fmt).pack, 1 if fmt[1] in "Qq" else 5
    if t in (FD.TYPE_SINT32, FD.TYPE_SINT64):
        return (lambda v: _to_int(v, t)), lambda n: encode_varint(((n << 1) ^ (n >> 63)) & _MASK64), 0
    if t in _INT_RANGES:
        return (lambda v: _to_int(v, t)), lambda n: encode_varint(n & _MASK64), 0
    if t == FD.TYPE_BOOL:
        def to_bool(v: Any) -> bool:
            if not isinstance(v, bool):
                raise _PathError(f"{v!r} is not true or false")
            return v
        return to_bool, lambda b: b"\x01" if b else b"\x00", 0
    if t == FD.TYPE_ENUM:
        names: dict[str, int] = {v.name: v.number for v in f.enum_type.values}

        def to_enum(v: Any) -> int:
            if isinstance(v, str) and v in names:
                return names[v]
            if isinstance(v, str) and not v.lstrip("-").isdigit():
                raise _PathError(f"{v[:40]!r} is not a value of {f.enum_type.name}")
            return _to_int(v, FD.TYPE_INT32)
        return to_enum, lambda n: encode_varint(n & _MASK64), 0
    if t == FD.TYPE_STRING:
        def to_str(v: Any) -> bytes:
            if not isinstance(v, str):
                raise _PathError(f"{v!r} is not a string")
            try:
                return v.encode()
            except UnicodeEncodeError as e:  # a lone surrogate, see _load
                raise _PathError(_not_utf8(e)) from None
        return to_str, lambda b: encode_varint(len(b)) + b, 2
    if t == FD.TYPE_BYTES:
        id_size = _HEX_ID_FIELDS.get(f.name, 0)
        return (lambda v: _to_bytes(v, id_size)), lambda b: encode_varint(len(b)) + b, 2
    raise TypeError(f"{f.full_name}: unsupported field type {t}")


def _field_encoder(f: Any) -> Callable[[Any], bytes | None]:
    """JSON value of field ``f`` -> its encoded field(s) with tags, or None to omit it."""
    if f.type == FD.TYPE_MESSAGE:
        if f.message_type.GetOptions().map_entry:
            raise TypeError(f"{f.full_name}: map fields are not used by OTLP")
        tag = encode_varint(f.number << 3 | 2)
        if f.is_repeated and f.message_type.full_name == _KEY_VALUE:
            return _key_value_list(tag)
        encode = _json_encoder(f.message_type).encode  # registered before its fields: cycles are fine

        def message(v: Any) -> bytes:
            body = encode(v)
            return tag + encode_varint(len(body)) + body

        if not f.is_repeated:
            return message
        return _repeated(message)
    convert, raw, wt = _scalar(f)
    if f.is_repeated:
        if f.is_packed:
            ptag = encode_varint(f.number << 3 | 2)

            def packed(v: Any) -> bytes | None:
                if not isinstance(v, list):
                    raise _PathError("expected a JSON array")
                if not v:
                    return None
                body = b"".join([raw(convert(x)) for x in v])
                return ptag + encode_varint(len(body)) + body
            return packed
        stag = encode_varint(f.number << 3 | wt)
        return _repeated(lambda v: stag + raw(convert(v)))
    tag = encode_varint(f.number << 3 | wt)
    if f.has_presence:
        return lambda v: tag + raw(convert(v))

    def implicit(v: Any) -> bytes | None:
        value = convert(v)
        if not value and not (isinstance(value, float) and math.copysign(1.0, value) < 0):
            return None  # proto3: a default value is not on the wire
        return tag + raw(value)
    return implicit


_KEY_VALUE = "opentelemetry.proto.common.v1.KeyValue"


def _key_value_list(tag: bytes) -> Callable[[Any], bytes | None]:
    """Encoder of a repeated KeyValue field (attributes), the bulk of every OTLP/JSON request:
    string and int values are written inline, anything else goes the generic way."""
    generic = _json_encoder(_KV_DESC)

    def many(v: Any) -> bytes | None:
        if not isinstance(v, list):
            raise _PathError("expected a JSON array")
        out: list[bytes] = []
        for i, obj in enumerate(v):
            body = None
            if type(obj) is dict and len(obj) == 2:
                key = obj.get("key")
                value = obj.get("value")
                if type(key) is str and type(value) is dict and len(value) == 1:
                    ((vname, x),) = value.items()
                    anyv = None
                    try:
                        if (vname == "stringValue" or vname == "string_value") and type(x) is str:
                            vb = x.encode()
                            anyv = b"\x0a" + encode_varint(len(vb)) + vb
                        elif vname == "intValue" or vname == "int_value":
                            # Only plain ASCII decimals of int64 length; anything else ("--5",
                            # "²", thousands of digits) goes the generic way, which says what is wrong.
                            if (type(x) is str and len(x) <= 20 and x.isascii()
                                    and x.removeprefix("-").isdigit()):
                                x = int(x)
                            if type(x) is int and -(1 << 63) <= x < 1 << 63:
                                anyv = b"\x18" + encode_varint(x & _MASK64)
                        if anyv is not None:
                            kb = key.encode()
                            head = b"\x0a" + encode_varint(len(kb)) + kb if kb else b""
                            body = head + b"\x12" + encode_varint(len(anyv)) + anyv
                    except UnicodeEncodeError:  # a lone surrogate: the generic way names its field
                        body = None
            if body is None:
                try:
                    body = generic.encode(obj)
                except _PathError as e:
                    e.path.append(f"[{i}]")
                    raise
            out.append(tag)
            out.append(encode_varint(len(body)))
            out.append(body)
        return b"".join(out) if out else None
    return many


def _repeated(one: Callable[[Any], bytes]) -> Callable[[Any], bytes | None]:
    def many(v: Any) -> bytes | None:
        if not isinstance(v, list):
            raise _PathError("expected a JSON array")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(one(x))
            except _PathError as e:
                e.path.append(f"[{i}]")
                raise
        return b"".join(out) if out else None
    return many


# A JSON number written ``-0`` (no fraction or exponent): orjson reads it as the integer 0, and a
# double field must keep the sign (IEEE 754 -0.0 is a value of its own, and protobuf keeps it).
_MINUS_ZERO = re.compile(rb"(?<![0-9A-Za-z_.])-0(?![0-9.eE])")


def _reject_constant(word: str) -> Any:
    raise WireError(f"invalid JSON: {word} is not a JSON value")


def _loads_python(body: bytes | str) -> Any:
    """The slow path for the rare body orjson cannot read as the mapping needs (see ``_load``):
    Python's reader, where each integer's text can be seen, with ``-0`` read as -0.0 (which
    every integer field takes as 0), and which keeps lone surrogates in strings."""
    try:
        return json.loads(body, parse_int=lambda t: -0.0 if t == "-0" else int(t),
                          parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError, or invalid UTF-8
        raise WireError(f"invalid JSON: {e}") from None
    except RecursionError:  # orjson stops at 1024 levels; Python's reader at its stack
        raise WireError("invalid JSON: nested too deeply") from None


def _not_utf8(e: UnicodeEncodeError) -> str:
    """The reason for a string holding a lone surrogate, in ``otlp.validate``'s words."""
    return f"not valid UTF-8 (character {e.start} of the string)"


def json_to_proto(signal: Signal, body: bytes) -> bytes:
    """OTLP/JSON Export request -> serialized protobuf request; WireError says what is wrong."""
    doc = _load(signal, body)
    try:
        return _encode(signal, doc)
    except WireError as e:
        raise WireError(f"invalid OTLP/JSON {signal.value} request: {e}") from None


@dataclass(frozen=True, slots=True)
class JsonRequest:
    """An OTLP/JSON request as protobuf, less the ResourceX that do not encode."""

    payload: bytes
    rejected_items: int
    error: str


def json_request(signal: Signal, body: bytes) -> JsonRequest:
    """OTLP/JSON Export request -> protobuf, keeping what encodes, one ResourceX at a time.

    A body that is not JSON, or not an object, raises WireError (the whole request is refused,
    400). A ResourceX with a value that does not fit its field (``"scale": 2**64``, a time that
    is not a number) is left out and its items counted, as ``wire.prepare`` does for protobuf, so
    both encodings give the same partial success for the same content.
    """
    doc = _load(signal, body)
    try:
        return JsonRequest(_encode(signal, doc), 0, "")
    except WireError as whole:
        names = (signal.spec.resource_json, signal.spec.resource_field)
        key = next((k for k in names if isinstance(doc.get(k), list)), None)
        if key is None:
            raise WireError(f"invalid OTLP/JSON {signal.value} request: {whole}") from None
    kept: list[bytes] = []
    rejected = 0
    errors: list[str] = []
    for i, rx in enumerate(doc[key]):
        try:
            kept.append(_encode(signal, {key: [rx]}))
        except WireError as e:
            rejected += _json_items(signal, rx)
            errors.append(f"{key}[{i}]: {str(e).removeprefix(f'{key}[0].')}")
    error = f"dropped {len(errors)} invalid {key}: " + "; ".join(errors[:5])
    if len(errors) > 5:
        error += f"; and {len(errors) - 5} more"
    return JsonRequest(b"".join(kept), rejected, error)


_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")


def _list(obj: Any, names: tuple[str, ...]) -> list[Any]:
    if isinstance(obj, dict):
        for name in names:
            value = obj.get(name)
            if isinstance(value, list):
                return value
    return []


def _json_items(signal: Signal, rx: Any) -> int:
    """Items (spans, log records, data points) in a ResourceX as JSON, however malformed."""
    n = 0
    spec = signal.spec
    for scope in _list(rx, (spec.scope_json, spec.scope_field)):
        for item in _list(scope, (spec.item_json, spec.item_field)):
            if not spec.counts_data_points:
                n += 1
                continue
            for data in _METRIC_DATA:
                points = item.get(data) if isinstance(item, dict) else None
                n += len(_list(points, ("dataPoints", "data_points")))
    return n


def _load(signal: Signal, body: bytes) -> dict[str, Any]:
    """The parsed body; WireError if it is not JSON.

    Text that is not Unicode inside a JSON string (bytes that are not UTF-8, or a ``\\ud800``
    escape without its pair) is a fault of that string, not of the JSON: orjson refuses the
    whole body for it, so such a body is read again by Python's reader from the text decoded
    with ``surrogateescape``, which keeps each bad byte or lone escape as a lone surrogate. The
    string's encoder then refuses it (``_not_utf8``) and only its ResourceX is dropped, as
    protobuf's content check (``otlp.validate``) drops the ResourceX of a string that is not
    UTF-8. A body that is still not JSON is refused with Python's message, which gives the
    right position (orjson checks UTF-8 first and reports character 0).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        # orjson's messages for both faults: "str is not valid UTF-8: surrogates not allowed",
        # "no low surrogate in string", "invalid high/low surrogate in string".
        if "surrogate" not in str(e):
            raise WireError(f"invalid JSON: {e}") from None
        doc = _loads_python(body.decode("utf-8", "surrogateescape"))
    else:
        if b"-0" in body and _MINUS_ZERO.search(body):
            doc = _loads_python(body)
    if not isinstance(doc, dict):
        raise WireError(f"OTLP/JSON {signal.value} request must be a JSON object, got {type(doc).__name__}")
    return doc


def _encode(signal: Signal, doc: dict[str, Any]) -> bytes:
    """A parsed OTLP/JSON request as protobuf; WireError names the path of what does not fit."""
    try:
        return _json_encoder(signal.spec.request.DESCRIPTOR).encode(doc)
    except _PathError as e:
        raise WireError(_printable(f"{e.where()}: {e.message}")) from None
    except RecursionError:  # AnyValue nests without bound; a hostile body must not cost more
        raise WireError("values nested too deeply") from None
    except Exception as e:  # a value a converter did not anticipate is still the client's 400, not a 500
        raise WireError(_printable(f"{type(e).__name__}: {str(e)[:200]}")) from None


def _printable(message: str) -> str:
    """``message`` with any lone surrogate (from a client's string) as a ``\\udcff`` escape: the
    answer that carries it must encode as UTF-8, in JSON and in protobuf alike."""
    return message.encode("utf-8", "backslashreplace").decode()


def proto_to_json(signal: Signal, payload: bytes) -> bytes:
    """Serialized protobuf request -> compact OTLP/JSON (hex ids, int enums, camelCase)."""
    buf = bytes(payload)
    try:
        doc = _json_decoder(signal.spec.request.DESCRIPTOR).decode(buf, 0, len(buf))
    except WireError as e:
        raise WireError(f"invalid {signal.value} request: {e}") from None
    except RecursionError:
        raise WireError(f"invalid {signal.value} request: messages nested too deeply") from None
    return orjson.dumps(doc)


# --- protobuf bytes -> JSON document, driven by the message descriptors -----------------------
#
# json_format.MessageToDict walks upb messages in Python (~55 ms for a 512-span request); the
# file sink turns every record into JSON, so the bytes are decoded straight into the
# proto3-JSON shape instead: int64 as strings, enums as ints, lowerCamelCase, hex ids,
# defaults of implicit-presence fields left out, unknown fields dropped.

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_FLOAT_NAMES = {math.inf: "Infinity", -math.inf: "-Infinity"}
_Handler = Callable[[dict[str, Any], bytes, int, int, int], None]


def _json_float(v: float) -> float | str:
    if v != v:
        return "NaN"
    return _FLOAT_NAMES.get(v, v)


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


class _MessageDecoder:
    """Body of one message type -> JSON object; one per descriptor, shared via a cache."""

    __slots__ = ("by_num", "name", "siblings", "subs")

    def __init__(self, name: str) -> None:
        self.name = name
        # number -> handler(out, buf, wire type, value or value start, value end)
        self.by_num: dict[int, _Handler] = {}
        self.siblings: dict[str, list[str]] = {}  # oneof member -> the other members
        self.subs: dict[str, _MessageDecoder] = {}  # message-typed field -> its decoder

    def merge(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Protobuf merge of a message seen twice: lists concatenate, messages merge, scalars
        replace, and a oneof member clears the others."""
        for key, value in new.items():
            for other in self.siblings.get(key, ()):
                old.pop(other, None)
            prev = old.get(key)
            if isinstance(prev, list) and isinstance(value, list):
                prev.extend(value)
            elif isinstance(prev, dict) and isinstance(value, dict):
                self.subs[key].merge(prev, value)
            else:
                old[key] = value
        return old

    def decode(self, buf: bytes, pos: int, end: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        by_num = self.by_num
        while pos < end:
            tag = buf[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(buf, pos, end)
            wt = tag & 7
            if wt == 2:
                ln = buf[pos] if pos < end else 0x80
                if ln < 0x80:
                    pos += 1
                else:
                    ln, pos = read_varint(buf, pos, end)
                value = pos
                pos += ln
            elif wt == 0:
                value, pos = read_varint(buf, pos, end)
                value &= _MASK64  # a tenth byte over 1 is truncated, as protobuf parsers do
            elif wt == 1:
                value = _U64.unpack_from(buf, pos)[0] if pos + 8 <= end else 0
                pos += 8
            elif wt == 5:
                value = _U32.unpack_from(buf, pos)[0] if pos + 4 <= end else 0
                pos += 4
            else:
                raise WireError(f"{self.name}: unsupported wire type {wt}")
            if pos > end:
                raise WireError(f"{self.name}: field {tag >> 3} runs past the end of the message")
            handler = by_num.get(tag >> 3)
            if handler is not None:
                handler(out, buf, wt, value, pos)
        return out


_DECODERS: dict[str, _MessageDecoder] = {}


def _json_decoder(desc: Any) -> _MessageDecoder:
    found = _DECODERS.get(desc.full_name)
    if found is not None:
        return found
    md = _DECODERS[desc.full_name] = _MessageDecoder(desc.full_name)
    for f in desc.fields:
        md.by_num[f.number] = _field_decoder(f)
        if f.containing_oneof is not None:
            md.siblings[f.json_name] = [o.json_name for o in f.containing_oneof.fields if o is not f]
        if f.type == FD.TYPE_MESSAGE:
            md.subs[f.json_name] = _json_decoder(f.message_type)
    return md


def _wire_type(f: Any) -> int:
    """The wire type a scalar field is written with when not packed."""
    if f.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return 2
    if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FIXED64, FD.TYPE_SFIXED64):
        return 1
    if f.type in (FD.TYPE_FLOAT, FD.TYPE_FIXED32, FD.TYPE_SFIXED32):
        return 5
    return 0


def _scalar_reader(f: Any) -> tuple[Callable[[int], Any] | None, Callable[[bytes], Any] | None, int, str]:
    """(value from a varint/fixed number, value from bytes, packed element size, struct code)."""
    t = f.type
    if t == FD.TYPE_STRING:
        def text(b: bytes) -> str:
            try:
                return b.decode()
            except UnicodeDecodeError:
                raise WireError(f"{f.full_name}: invalid UTF-8") from None
        return None, text, 0, ""
    if t == FD.TYPE_BYTES:
        if f.name in _HEX_ID_FIELDS:
            return None, bytes.hex, 0, ""
        return None, lambda b: base64.b64encode(b).decode(), 0, ""
    if t == FD.TYPE_DOUBLE:
        return lambda v: _json_float(struct.unpack("<d", _U64.pack(v))[0]), None, 8, "d"
    if t == FD.TYPE_FLOAT:
        return lambda v: _json_float(struct.unpack("<f", _U32.pack(v))[0]), None, 4, "f"
    if t == FD.TYPE_BOOL:
        return bool, None, 0, ""
    if t in (FD.TYPE_INT64, FD.TYPE_SFIXED64):
        return lambda v: str(_signed(v, 64)), None, 8 if t == FD.TYPE_SFIXED64 else 0, "q"
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return str, None, 8 if t == FD.TYPE_FIXED64 else 0, "Q"
    if t == FD.TYPE_SINT64:
        return lambda v: str((v >> 1) ^ -(v & 1)), None, 0, ""
    if t == FD.TYPE_SINT32:
        # Only the low 32 bits count, as in protobuf's parsers: a ten-byte varint for a sint32
        # (valid framing) must not become a number no JSON reader can hold.
        return lambda v: ((v & 0xFFFFFFFF) >> 1) ^ -(v & 1), None, 0, ""
    if t in (FD.TYPE_INT32, FD.TYPE_ENUM, FD.TYPE_SFIXED32):
        return lambda v: _signed(v & 0xFFFFFFFF, 32), None, 4 if t == FD.TYPE_SFIXED32 else 0, "i"
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return lambda v: v & 0xFFFFFFFF, None, 4 if t == FD.TYPE_FIXED32 else 0, "I"
    raise TypeError(f"{f.full_name}: unsupported field type {t}")


def _field_decoder(f: Any) -> _Handler:
    name = f.json_name
    siblings = [o.json_name for o in f.containing_oneof.fields if o is not f] if f.containing_oneof else []

    def clear_oneof(out: dict[str, Any]) -> None:
        for other in siblings:
            out.pop(other, None)

    if f.type == FD.TYPE_MESSAGE:
        sub = _json_decoder(f.message_type)
        decode = _fast_key_value_json if f.message_type.full_name == _KEY_VALUE else sub.decode

        # A field whose wire type does not match its declaration is an unknown field to
        # protobuf's parsers (upb, which the edge checks with, keeps it aside): skip it, never
        # fail on it, so what the edge accepted always converts.
        if f.is_repeated:
            def repeated_message(out: dict[str, Any], buf: bytes, wt: int, vs: int, ve: int) -> None:
                if wt != 2:
                    return
                value = decode(buf, vs, ve)
                lst = out.get(name)
                if lst is None:
                    out[name] = [value]
                else:
                    lst.append(value)
            return repeated_message

        def message(out: dict[str, Any], buf: bytes, wt: int, vs: int, ve: int) -> None:
            if wt != 2:
                return
            value = sub.decode(buf, vs, ve)
            prev = out.get(name)
            out[name] = value if prev is None else sub.merge(prev, value)
            if siblings and len(out) > 1:
                clear_oneof(out)
        return message

    from_number, from_bytes, size, code = _scalar_reader(f)
    implicit = not f.has_presence and not f.is_repeated
    expected = _wire_type(f)

    def scalar(out: dict[str, Any], buf: bytes, wt: int, value: int, ve: int) -> None:
        if wt != expected and not (wt == 2 and f.is_repeated):
            return  # an unknown field to protobuf (see above)
        if from_bytes is not None:
            is_default = ve == value
            result = from_bytes(buf[value:ve])
        elif wt == 2:  # packed repeated numbers
            result = _unpack(f, from_number, size, code, buf, value, ve)
            lst = out.get(name)
            if lst is None:
                out[name] = result
            else:
                lst.extend(result)
            return
        else:
            assert from_number is not None  # numbers are read from wire types 0, 1 and 5
            is_default = value == 0
            result = from_number(value)
        if f.is_repeated:
            out.setdefault(name, []).append(result)
        elif implicit and is_default:
            out.pop(name, None)  # proto3 JSON leaves default values out
        else:
            out[name] = result
            if siblings and len(out) > 1:
                clear_oneof(out)
    return scalar


def _fast_key_value_json(buf: bytes, pos: int, end: int) -> dict[str, Any]:
    """A KeyValue with a short key and a short string or int value, the bulk of every request,
    read without the generic walk; anything else goes the generic way."""
    if end - pos >= 4 and buf[pos] == 0x0A:
        ks = pos + 2
        ke = ks + buf[pos + 1]
        if (buf[pos + 1] < 0x80 and ke + 3 < end and buf[ke] == 0x12 and buf[ke + 1] < 0x80
                and ke + 2 + buf[ke + 1] == end):
            vs = ke + 2
            kind = buf[vs]
            try:
                if kind == 0x0A and buf[vs + 1] < 0x80 and vs + 2 + buf[vs + 1] == end:
                    return {"key": buf[ks:ke].decode(), "value": {"stringValue": buf[vs + 2:end].decode()}}
                if kind == 0x18:
                    n, after = read_varint(buf, vs + 1, end)
                    if after == end:
                        return {"key": buf[ks:ke].decode(), "value": {"intValue": str(_signed(n, 64))}}
            except UnicodeDecodeError:
                pass  # the generic path reports it
    return _json_decoder(_KV_DESC).decode(buf, pos, end)


def _unpack(f: Any, from_number: Callable[[int], Any] | None, size: int, code: str, buf: bytes,
            pos: int, end: int) -> list[Any]:
    """Elements of a packed repeated numeric field."""
    if not f.is_repeated or from_number is None:
        raise WireError(f"{f.full_name}: wire type 2 for a number")
    if size:
        n, rem = divmod(end - pos, size)
        if rem:
            raise WireError(f"{f.full_name}: packed length {end - pos} is not a multiple of {size}")
        raw = struct.unpack_from(f"<{n}{code}", buf, pos)
        if code in "df":
            return [_json_float(x) for x in raw]
        if code in "qQ":
            return [str(x) for x in raw]
        return list(raw)
    out = []
    while pos < end:
        v, pos = read_varint(buf, pos, end)
        out.append(from_number(v & _MASK64))
    return out


def response_json(rejected: int, message: str, signal: Signal) -> bytes:
    """Export*ServiceResponse as JSON: ``{}`` on full success, else ``partialSuccess``."""
    if rejected <= 0 and not message:
        return b"{}"
    partial: dict[str, Any] = {}
    if rejected > 0:
        partial[signal.spec.rejected_json] = str(rejected)  # int64 -> string, as proto3 JSON
    if message:
        partial["errorMessage"] = message
    return orjson.dumps({"partialSuccess": partial})
