"""Checkpoint files: written atomically, sealed with a checksum, read without executing anything.

``save(obj, path)`` serialises ``obj`` with ``torch.save`` (a zip archive), records the SHA-256
of the archive in the archive's own end-of-file comment, writes the bytes to a temporary file
in the same directory, flushes and fsyncs it, then renames it over ``path`` (a crash leaves
either the old or the new file, never half of one). The file stays an ordinary
``torch.load``-able archive (zip readers skip the comment).

``load(path)`` reads the whole file, checks the checksum, and only then unpickles it with
``torch.load(weights_only=True)`` (tensors, numbers, strings and containers only):

* a truncated or altered file (the checksum does not match, or the file does not end as a
  complete archive does) raises :class:`CorruptCheckpointError` naming the file, before any
  tensor is built;
* a file that would run code on unpickling raises :class:`UnsafeCheckpointError`;
* a file without a checksum (a complete archive written before checkpoints were sealed or by
  plain ``torch.save``, or torch's older pickle format) is loaded with a ``UserWarning`` saying it could not be verified (save it
  again to seal it); an unreadable one raises :class:`CorruptCheckpointError`.

The seal: the archive's end-of-central-directory record (22 bytes, ``PK\\x05\\x06``) gets the
comment ``chronograd-sha256:<hex>``, the digest of every byte before the comment-length field.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

_EOCD = b"PK\x05\x06"  # zip end-of-central-directory signature
_EOCD_SIZE = 22  # its fixed part; the last 2 bytes are the comment length
_SEAL = b"chronograd-sha256:"
_SEAL_SIZE = len(_SEAL) + 64


class UnsafeCheckpointError(ValueError):
    """The file holds objects other than tensors and plain containers (refused, not run)."""


class CorruptCheckpointError(ValueError):
    """The file is truncated or altered (its checksum does not match) or not a checkpoint."""


def seal(data: bytes) -> bytes:
    """``torch.save``'s bytes with the SHA-256 of their contents as the archive's comment."""
    pos = len(data) - _EOCD_SIZE
    if pos < 0 or data[pos : pos + 4] != _EOCD or data[-2:] != b"\0\0":
        raise RuntimeError("torch.save did not end its archive as expected; cannot seal it")
    body = data[: pos + 20]
    comment = _SEAL + hashlib.sha256(body).hexdigest().encode("ascii")
    return body + struct.pack("<H", len(comment)) + comment


def verify(data: bytes, path: Path) -> bool:
    """Check ``data`` read from ``path``: True when sealed and intact, False when it carries no
    seal (a plain archive); raise :class:`CorruptCheckpointError` when damaged."""
    pos = len(data) - _EOCD_SIZE - _SEAL_SIZE
    sealed = (
        pos >= 0
        and data[pos : pos + 4] == _EOCD
        and data[pos + 20 : pos + 22] == struct.pack("<H", _SEAL_SIZE)
        and data[-_SEAL_SIZE:].startswith(_SEAL)
    )
    if sealed:
        got = hashlib.sha256(data[: pos + 20]).hexdigest().encode("ascii")
        if got != data[-64:]:
            raise CorruptCheckpointError(
                f"{path} is not a readable checkpoint: its contents do not match the checksum "
                f"written with it ({len(data)} bytes; altered or corrupted after saving); "
                "resume from an earlier checkpoint"
            )
        return True
    archive = len(data) >= _EOCD_SIZE and data[-_EOCD_SIZE:][:4] == _EOCD
    legacy_pickle = data[:1] == b"\x80"  # torch's pre-zip format, or a bare pickle
    if not (archive or legacy_pickle):
        raise CorruptCheckpointError(
            f"{path} is not a readable checkpoint: it does not end as a complete checkpoint "
            f"does ({len(data)} bytes; truncated, damaged, or another kind of file); resume "
            "from an earlier checkpoint"
        )
    return False


def save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically write ``obj`` (tensors / dicts / lists / numbers / strings) to ``path``,
    sealed with the checksum of its contents."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = seal(buffer.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike[str], map_location: Any = None) -> Any:
    """Verify and load a checkpoint with ``weights_only=True`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if not verify(data, path):
        warnings.warn(
            f"{path} carries no checksum (written by plain torch.save or an older chronograd), "
            "so it cannot be checked for damage; it is loaded unverified. Save it again "
            "(trainer.save_checkpoint) to seal it.",
            UserWarning,
            stacklevel=2,
        )
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain "
            f"containers, which could execute code when unpickled ({str(e).splitlines()[0]}). "
            "Only load checkpoints written by chronograd or another trusted source."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptCheckpointError(
            f"{path} is not a readable checkpoint ({' '.join(str(e).split())[:200]})"
        ) from None
