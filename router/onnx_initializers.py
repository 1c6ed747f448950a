"""Read named weight tensors (initializers) out of an ONNX file without the onnx package.

The runtime depends on numpy and onnxruntime only, and onnxruntime does not expose a
model's weights. An ONNX file is a protobuf message; the few fields needed here are
ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto dims (1),
data_type (2), name (8), raw_data (9), float_data (4), int64_data (7).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 11: np.float64}
_GRAPH, _INITIALIZER = 7, 5
_DIMS, _DATA_TYPE, _FLOAT_DATA, _INT64_DATA, _NAME, _RAW_DATA = 1, 2, 4, 7, 8, 9


class OnnxFormatError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise OnnxFormatError("truncated protobuf field")
        yield field, wire, value


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _tensor(buf: bytes) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    name, dtype, raw, floats, ints = "", 0, None, b"", b""
    for field, _, value in _fields(buf):
        if isinstance(value, int):
            if field == _DIMS:
                dims.append(value)
            elif field == _DATA_TYPE:
                dtype = value
        elif field == _DIMS:
            dims.extend(_packed_varints(value))
        elif field == _NAME:
            name = value.decode("utf-8")
        elif field == _RAW_DATA:
            raw = value
        elif field == _FLOAT_DATA:
            floats += value
        elif field == _INT64_DATA:
            ints = np.array(_packed_varints(value), dtype="<i8").tobytes()
    if dtype not in _DTYPES:
        raise OnnxFormatError(f"initializer {name!r}: unsupported data type {dtype}")
    data = raw if raw is not None else (floats if dtype == 1 else ints)
    arr = np.frombuffer(data, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
    if arr.size != int(np.prod(dims, dtype=np.int64)):
        raise OnnxFormatError(f"initializer {name!r}: {arr.size} values for shape {dims}")
    return name, arr.astype(_DTYPES[dtype]).reshape(dims)


def read_initializers(path: str | Path, names: Collection[str]) -> dict[str, np.ndarray]:
    """The requested initializers that exist in the model (others are skipped unparsed)."""
    data = Path(path).read_bytes()
    wanted = {n.encode("utf-8") for n in names}
    out: dict[str, np.ndarray] = {}
    for field, _, graph in _fields(data):
        if field != _GRAPH or not isinstance(graph, bytes):
            continue
        for gfield, _, tensor in _fields(graph):
            if gfield == _INITIALIZER and isinstance(tensor, bytes) and _named(tensor, wanted):
                name, arr = _tensor(tensor)
                out[name] = arr
    return out


def _named(tensor: bytes, wanted: set[bytes]) -> bool:
    for field, _, value in _fields(tensor):
        if field == _NAME:
            return value in wanted
    return False
