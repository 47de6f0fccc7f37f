"""Is this file a whole GGUF? Read the header and tensor table, compare with the size.

Pre-flight calls this before a run directory is written, so an empty, foreign,
corrupt or truncated weights file is a one-line error instead of a crash inside
llama.cpp after the run has started. It reads the header only (memory-mapped): a
100 MB file is checked in milliseconds.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from failforge.errors import ModelUnavailable

_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Truncated
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.u64())

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALARS:
            self.take(_SCALARS[vtype])
        elif vtype == _STRING:
            self.string()
        elif vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            if etype in _SCALARS:
                self.take(_SCALARS[etype] * count)
            else:
                for _ in range(count):
                    self.skip_value(etype)
        else:
            raise ValueError(f"unknown metadata value type {vtype}")


def _tensor_bytes(ggml_type: int, dims: list[int]) -> int | None:
    try:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:  # without the gguf package the header is still checked
        return None
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in dims:
        n *= d
    return n // block * size


def check_gguf(path: str | Path) -> None:
    """Raise a one-line ModelUnavailable unless ``path`` is a complete GGUF file."""
    p = Path(path)
    where = f"GGUF file {p}"
    try:
        size = p.stat().st_size
        if size == 0:
            raise ModelUnavailable(f"{where}: empty file")
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            _check(_Reader(buf), size, where)
    except OSError as e:
        raise ModelUnavailable(f"{where}: cannot read it ({e.strerror or e})") from None


def _check(r: _Reader, size: int, where: str) -> None:
    try:
        if r.take(4) != b"GGUF":
            raise ModelUnavailable(f"{where}: not a GGUF file (bad magic bytes)")
        version = r.u32()
        if version not in (2, 3):
            raise ModelUnavailable(f"{where}: unsupported GGUF version {version}")
        n_tensors, n_kv = r.u64(), r.u64()
        if n_tensors > size or n_kv > size:
            raise ModelUnavailable(f"{where}: corrupt header ({n_tensors} tensors, {n_kv} metadata entries)")
        alignment = _DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key, vtype = r.string(), r.u32()
            if key == b"general.alignment" and vtype == 4:
                alignment = r.u32() or _DEFAULT_ALIGNMENT
            else:
                r.skip_value(vtype)
        end = 0
        for _ in range(n_tensors):
            r.string()
            dims = [r.u64() for _ in range(r.u32())]
            ggml_type, offset = r.u32(), r.u64()
            nbytes = _tensor_bytes(ggml_type, dims)
            end = max(end, offset + (nbytes or 0))
    except _Truncated:
        raise ModelUnavailable(f"{where}: truncated or corrupt (the header runs past the end of the file at {size} bytes)") from None
    except ValueError as e:
        raise ModelUnavailable(f"{where}: corrupt header ({e})") from None
    data_start = -(-r.pos // alignment) * alignment
    if data_start + end > size:
        raise ModelUnavailable(f"{where}: truncated (its tensors need {data_start + end} bytes, the file has {size})")
