"""KServe v2 (Open Inference Protocol) bodies: cheap validation, and decoding for the log.

The gateway forwards request bytes untouched. It parses only the JSON header (with the
binary tensor extension, the first `Inference-Header-Content-Length` bytes; otherwise the
whole body) to reject malformed requests with a 400 itself: Triton answers some malformed
bodies with a 500, and a client mistake must never look like a server fault. Decoding
tensors into JSON-able lists happens off the request path, only for models whose policy
logs inputs.
"""

from __future__ import annotations

import functools
import json
import math
import struct
import sys
from typing import Any

__all__ = [
    "BadRequest",
    "DATATYPES",
    "TOO_DEEP",
    "parse_infer_header",
    "decode_infer_request",
    "response_outputs",
    "rename_response",
]

# KServe v2 tensor datatypes and their element sizes (BYTES is length-prefixed).
DATATYPES: dict[str, int | None] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
    "BYTES": None,
}

_NUMPY = {
    "BOOL": "bool",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}

_MAX_RANK = 32


class BadRequest(ValueError):
    """The client sent something the protocol does not allow; answered with 400."""


def _header_length(value: str | None, body_len: int) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"Inference-Header-Content-Length {value!r} is not a non-negative integer")
    n = int(value)
    if n == 0 or n > body_len:
        raise BadRequest(
            f"Inference-Header-Content-Length {n} does not fit a body of {body_len} bytes"
        )
    return n


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_infer_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], int]:
    """Validate an inference request's JSON part; return it and its length in bytes.

    Checks the structure the protocol requires (inputs with name, datatype, shape and data
    or a binary size; binary sizes adding up to the bytes that follow the header), so that
    whatever reaches a backend is well-formed.
    """
    n = _header_length(header_length, len(body))
    head = body if n is None else body[:n]
    try:
        obj = json.loads(head, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(TOO_DEEP) from None
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object with an 'inputs' list")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("request body must have a non-empty 'inputs' list")
    binary_total = 0
    binary_bytes: list[tuple[str, list[int], int]] = []
    names: set[str] = set()
    for i, inp in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(inp, dict):
            raise BadRequest(f"{where} must be an object")
        name = inp.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}.name must be a non-empty string")
        if name in names:
            raise BadRequest(f"input {name!r} appears twice")
        names.add(name)
        dtype = inp.get("datatype")
        if dtype not in DATATYPES:
            raise BadRequest(
                f"{where}.datatype {dtype!r} is not a tensor type; allowed: " + ", ".join(DATATYPES)
            )
        shape = inp.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_RANK
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise BadRequest(f"{where}.shape must be a list of at most 32 non-negative integers")
        params = inp.get("parameters")
        _check_parameters(params, f"{where}.parameters", {"binary_data_size": (int,)})
        size = (params or {}).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise BadRequest(f"{where}.parameters.binary_data_size must be an integer >= 0")
            if "data" in inp:
                raise BadRequest(f"{where} has both 'data' and a binary_data_size")
            item = DATATYPES[dtype]
            if item is not None and size != math.prod(shape) * item:
                raise BadRequest(
                    f"{where}: binary_data_size {size} does not match shape {shape} of {dtype}"
                )
            binary_total += size
            if dtype == "BYTES":
                binary_bytes.append((where, shape, size))
        elif "data" not in inp:
            raise BadRequest(f"{where} has neither 'data' nor parameters.binary_data_size")
        else:
            count = _count_elements(inp["data"], dtype, where)
            if count != math.prod(shape):
                raise BadRequest(
                    f"{where}: shape {shape} needs {math.prod(shape)} elements, data has {count}"
                )
    outputs = obj.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("'outputs' must be a list")
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{i}] must be an object with a 'name' string")
            _check_parameters(o.get("parameters"), f"outputs[{i}].parameters", _OUTPUT_PARAMS)
    _check_parameters(obj.get("parameters"), "parameters", _REQUEST_PARAMS)
    if "id" in obj and not isinstance(obj["id"], str):
        raise BadRequest("'id' must be a string")
    tail = len(body) - (n if n is not None else len(body))
    if binary_total != tail:
        raise BadRequest(
            f"binary tensor sizes add up to {binary_total} bytes but {tail} bytes follow "
            "the JSON header"
        )
    if binary_bytes:
        _check_binary_bytes(obj["inputs"], body, n or 0)
    return obj, (n if n is not None else len(body))


# Parameters whose type the backend insists on; others must be a string, int or bool.
_REQUEST_PARAMS: dict[str, tuple[type, ...]] = {
    "binary_data_output": (bool,),
    "sequence_id": (int, str),
    "sequence_start": (bool,),
    "sequence_end": (bool,),
    "priority": (int,),
    "timeout": (int,),
}
_OUTPUT_PARAMS: dict[str, tuple[type, ...]] = {"binary_data": (bool,), "classification": (int,)}


def _check_parameters(params: Any, where: str, known: dict[str, tuple[type, ...]]) -> None:
    if params is None:
        return
    if not isinstance(params, dict):
        raise BadRequest(f"{where} must be an object")
    for k, v in params.items():
        want = known.get(k, (str, int, bool))
        ok = isinstance(v, want) and not (isinstance(v, bool) and bool not in want)
        if not ok:
            names = " or ".join(t.__name__ for t in want)
            raise BadRequest(f"{where}.{k} must be {names}")


# The range each numeric datatype can hold. JSON numbers beyond it (`1e400` parses as inf,
# `1e39` overflows FP32) would reach the backend as inf or a wrapped integer: a wrong answer,
# not an error, so they are refused here.
_RANGES: dict[str, tuple[float, float]] = {
    "FP16": (-65504.0, 65504.0),
    "BF16": (-3.3895313892515355e38, 3.3895313892515355e38),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
    "FP64": (-sys.float_info.max, sys.float_info.max),
    **{f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, 2**b - 1) for b in (8, 16, 32, 64)},
}
TOO_DEEP = (
    "request body is not valid JSON: it nests too deeply (tensor data nests at most "
    f"{_MAX_RANK} levels)"
)


def _element_ok(dtype: str) -> Any:
    if dtype == "BOOL":
        return lambda v: type(v) is bool
    if dtype == "BYTES":
        return lambda v: type(v) is str
    lo, hi = _RANGES[dtype]
    if dtype.startswith(("FP", "BF")):  # NaN and inf fail the comparison
        return lambda v: (type(v) is float or type(v) is int) and lo <= v <= hi
    return lambda v: type(v) is int and lo <= v <= hi


def _element_error(v: Any, dtype: str, where: str) -> BadRequest:
    if dtype in _RANGES and type(v) in (int, float):
        lo, hi = _RANGES[dtype]
        return BadRequest(
            f"{where}.data holds {v!r}, which is out of range for {dtype}; allowed: "
            f"{'finite ' if dtype[0] in 'FB' else ''}values from {lo:g} to {hi:g}"
        )
    return BadRequest(f"{where}.data holds {v!r}, which is not a {dtype} value")


def _count_elements(data: Any, dtype: str, where: str) -> int:
    """Count the scalars of (possibly nested) JSON tensor data, checking each one's type,
    its range, and that it nests no deeper than a tensor's rank can."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}.data must be a list")
    ok = _element_ok(dtype)
    count = 0
    stack = [(data, 1)]
    while stack:
        items, depth = stack.pop()
        for v in items:
            if type(v) is list:
                if depth >= _MAX_RANK:
                    raise BadRequest(f"{where}.data nests deeper than {_MAX_RANK} levels")
                stack.append((v, depth + 1))
            elif ok(v):
                count += 1
            else:
                raise _element_error(v, dtype, where)
    return count


def _check_binary_bytes(inputs: list[dict[str, Any]], body: bytes, start: int) -> None:
    """BYTES tensors in binary form: length-prefixed elements that must fill their size."""
    pos = start
    for i, inp in enumerate(inputs):
        size = (inp.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        if inp["datatype"] == "BYTES":
            end, count = pos + size, 0
            p = pos
            while p < end:
                if p + 4 > end:
                    raise BadRequest(f"inputs[{i}]: truncated BYTES element")
                (ln,) = struct.unpack_from("<I", body, p)
                p += 4 + ln
                count += 1
            if p != end or count != math.prod(inp["shape"]):
                raise BadRequest(
                    f"inputs[{i}]: BYTES data does not hold {math.prod(inp['shape'])} elements"
                )
        pos += size


def _decode_bytes(raw: bytes) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos + 4 <= len(raw):
        (ln,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        out.append(raw[pos : pos + ln].decode("utf-8", errors="replace"))
        pos += ln
    return out


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return list(data) if isinstance(data, list) else [data]


def decode_infer_request(header: dict[str, Any], body: bytes, header_len: int) -> dict[str, Any]:
    """The request as a plain JSON KServe v2 request (every tensor inline, flat data).

    This is the form the log keeps and replay sends: any v2 server accepts it, whatever
    encoding the original client chose. BF16 tensors (no numpy type) keep data None.
    """
    import numpy as np

    pos = header_len
    inputs: list[dict[str, Any]] = []
    for inp in header["inputs"]:
        dtype = inp["datatype"]
        entry: dict[str, Any] = {"name": inp["name"], "datatype": dtype, "shape": inp["shape"]}
        size = (inp.get("parameters") or {}).get("binary_data_size")
        if size is None:
            entry["data"] = _flatten(inp.get("data", []))
        else:
            raw = body[pos : pos + size]
            pos += size
            if dtype == "BYTES":
                entry["data"] = _decode_bytes(raw)
            elif dtype in _NUMPY:
                entry["data"] = np.frombuffer(raw, dtype=_NUMPY[dtype]).tolist()
            else:
                entry["data"] = None
        inputs.append(entry)
    out: dict[str, Any] = {"inputs": inputs}
    if header.get("parameters"):
        params = {k: v for k, v in header["parameters"].items() if k != "binary_data_output"}
        if params:
            out["parameters"] = params
    if header.get("outputs"):
        out["outputs"] = [{"name": o["name"]} for o in header["outputs"]]
    return out


def response_outputs(body: bytes, header_length: str | None) -> dict[str, Any] | None:
    """What the log keeps of a response: the decoded JSON, or for binary responses the
    JSON header only (tensor metadata and sizes, not the tensor bytes)."""
    try:
        if header_length is not None:
            obj = json.loads(body[: int(header_length)])
        else:
            obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    if "outputs" in obj:
        return {"outputs": obj["outputs"]}
    return obj


# ---------------------------------------------------------------------- response naming

_DECODER = json.JSONDecoder()
scanstring = json.decoder.scanstring  # the C scanner: a string's value and where it ends
_WS = " \t\n\r"
_PREFIX = 4096  # the names come first in Triton's and Ray's answers: look there first


def _value_spans(text: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """Walk the top-level object's keys until model_name and model_version are found,
    skipping other values without building them; (offset after '{', key -> value span).

    Raises ValueError or IndexError when the text is not such an object or ends too soon.
    """
    i = 0
    while text[i] in _WS:
        i += 1
    if text[i] != "{":
        raise ValueError("not an object")
    start = i + 1
    i = start
    spans: dict[str, tuple[int, int]] = {}
    while True:
        while text[i] in _WS:
            i += 1
        if text[i] == "}":
            return start, spans
        if text[i] != '"':
            raise ValueError("expected a key")
        key, i = scanstring(text, i + 1)
        while text[i] in _WS:
            i += 1
        if text[i] != ":":
            raise ValueError("expected ':'")
        i += 1
        while text[i] in _WS:
            i += 1
        if text[i] == '"':
            begin = i
            _, i = scanstring(text, i + 1)
            if key in ("model_name", "model_version"):
                spans[key] = (begin, i)
                if len(spans) == 2:
                    return start, spans
        elif key in ("model_name", "model_version"):
            raise ValueError(f"{key} is not a string")
        else:
            _, i = _DECODER.raw_decode(text, i)
        while text[i] in _WS:
            i += 1
        if text[i] == ",":
            i += 1
        elif text[i] != "}":
            raise ValueError("expected ',' or '}'")


@functools.lru_cache(maxsize=4096)
def _names(model: str, version: int) -> tuple[bytes, bytes]:
    return json.dumps(model).encode(), json.dumps(str(version)).encode()


@functools.lru_cache(maxsize=4096)
def _backend_prefix(backend_model: str) -> bytes:
    """How Triton starts an answer without an id: checked with one `startswith`."""
    return b'{"model_name":' + json.dumps(backend_model).encode() + b',"model_version":"'


def rename_response(
    body: bytes,
    header_length: str | None,
    model: str,
    version: int,
    backend_model: str | None = None,
) -> tuple[bytes, str | None] | None:
    """The response naming the registry's model and version instead of the backend's.

    A backend answers with its own names (Triton: `ctr__v2`, version "1"); a client asked
    for `ctr` and must learn which registry version served it. Only the two values are
    spliced: the header is scanned up to them (latin-1 keeps one character per byte, so
    offsets are byte offsets) and nothing else is decoded or re-encoded, and binary tensor
    bytes after the header are untouched. Returns the new body and header length, or None
    when the body is not a KServe response object (it is then passed on as it came).
    Given the backend's name, Triton's usual opening is recognised by its exact bytes.
    """
    n = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            return None
        n = int(header_length)
    if backend_model is not None:
        prefix = _backend_prefix(backend_model)
        if body.startswith(prefix):
            end = body.find(b'"', len(prefix), min(n, len(prefix) + 24))
            if end > len(prefix) and body[len(prefix) : end].isdigit():
                name, ver = _names(model, version)
                head = b'{"model_name":' + name + b',"model_version":' + ver
                out = b"".join((head, memoryview(body)[end + 1 :]))
                return out, (None if header_length is None else str(n + len(out) - len(body)))
    found = None
    for size in (min(n, _PREFIX), n) if n > _PREFIX else (n,):
        try:
            found = _value_spans(body[:size].decode("latin-1"))
            break
        except (ValueError, IndexError, RecursionError):
            continue
    if found is None:
        return None
    start, spans = found
    name, ver = _names(model, version)
    edits: list[tuple[int, int, bytes]] = []
    missing = b""
    for key, value in (("model_name", name), ("model_version", ver)):
        if key in spans:
            edits.append((*spans[key], value))
        else:
            missing += b'"' + key.encode() + b'":' + value + b","
    if missing:
        rest = body[start:n].lstrip()
        if rest.startswith(b"}"):  # an empty object: no comma after the last pair
            missing = missing[:-1]
        edits.append((start, start, missing))
    view = memoryview(body)  # slices without copying: the one copy is the join
    parts: list[Any] = []
    pos = 0
    for a, b, value in sorted(edits):
        parts += [view[pos:a], value]
        pos = b
    parts.append(view[pos:])
    out = b"".join(parts)
    new_n = n + len(out) - len(body)
    return out, (None if header_length is None else str(new_n))
