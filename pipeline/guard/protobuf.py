"""The few lines of protobuf the guard needs, reading and writing, so that it never imports `onnx`.

Reading walks a buffer (bytes, or an mmap of a model file: only the bytes looked at are paged in) and
yields each field with its value: an int for varint and fixed-width fields, and for length-delimited ones
the (start, end) span inside the same buffer, which the caller walks again (a nested message) or copies
(`buffer[start:end]`) only when it wants the bytes. Writing makes the tiny models the runtime probe loads.
"""
from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, or something else entirely)."""


def read_varint(buffer, position: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `position`."""
    shift = result = 0
    while True:
        if position >= end:
            raise ProtobufError("unexpected end inside a varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ProtobufError("malformed varint")


def fields(buffer, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """Yield (field_number, wire_type, value) for each field of the message in buffer[start:end]."""
    end = len(buffer) if end is None else end
    position = start
    while position < end:
        key, position = read_varint(buffer, position, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, position = read_varint(buffer, position, end)
        elif wire == LENGTH_DELIMITED:
            length, position = read_varint(buffer, position, end)
            value = (position, position + length)
            position += length
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            value = int.from_bytes(buffer[position:position + width], "little")
            position += width
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire}")
        if position > end:
            raise ProtobufError("unexpected end inside a field")
        yield number, wire, value


def text(buffer, span: tuple[int, int]) -> str:
    """A string field's value."""
    try:
        return bytes(buffer[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtobufError(f"a string field is not UTF-8 ({error})") from None


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_field(number: int, payload: bytes | str | int) -> bytes:
    """One field: an int as a varint, str or bytes as length-delimited (a nested message is bytes)."""
    if isinstance(payload, int):
        return encode_varint(number << 3 | VARINT) + encode_varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(data)) + data
