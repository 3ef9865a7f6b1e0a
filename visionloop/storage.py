"""One storage layer for local paths and ``s3://`` URIs alike (fsspec; s3fs for S3).

Every read and write in visionloop goes through these helpers, so a stage never branches on
where its data lives. Writes are atomic: data goes to a temporary name beside the target and
is moved into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

# Errors a second attempt may not hit: an endpoint briefly down, a timeout, a reset connection.
# Matched by class name through the MRO so that botocore/aiohttp need not be imported here
# (botocore's ConnectionError is not the builtin one).
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for storage/network errors worth retrying; False for missing or broken data.

    Stages quarantine an item only for what is wrong with the item; a transient error must
    propagate so the task is retried (and the run fails if it persists), never quarantine.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(c.__name__ in _TRANSIENT_NAMES for c in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for remote URIs and the OS separator for local ones."""
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def dirname(uri: str) -> str:
    return posixpath.dirname(uri) if is_remote(uri) else os.path.dirname(uri)


def filesystem(uri: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem serving ``uri`` and the path inside it.

    S3 endpoint and credentials come from the environment (``AWS_*`` variables or
    ``AWS_ENDPOINT_URL``), never from params, so they cannot leak into reports.
    """
    if uri.startswith("s3://") and "client_kwargs" not in storage_options:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            storage_options = {**storage_options, "client_kwargs": {"endpoint_url": endpoint}}
    return url_to_fs(uri, **storage_options)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` so that readers see either nothing or the whole file.

    Local files are written to a temporary sibling and renamed (atomic on POSIX). An S3 PUT is
    already atomic: the object appears only when the upload completes.
    """
    fs, path = filesystem(uri)
    parent = dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(uri: str, text: str) -> None:
    write_bytes_atomic(uri, text.encode("utf-8"))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_table(uri: str, table: pd.DataFrame | pa.Table, schema: pa.Schema | None = None) -> None:
    """Write a DataFrame or Arrow table as Parquet, atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(uri, buf.getvalue())


def read_table(uri: str) -> pd.DataFrame:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh).to_pandas()


def list_files(root: str) -> list[tuple[str, dict[str, Any]]]:
    """Every file below ``root`` with its listing info (size, mtime or ETag), sorted by URI.

    One ``find(detail=True)`` call: on S3 that is a paged LIST, not one HEAD per object. URIs
    keep the root's own form (a relative local root stays relative), so manifests do not depend
    on where the checkout lives.
    """
    fs, path = filesystem(root)
    found = fs.find(path, withdirs=False, detail=True)
    if is_remote(root):
        return [(fs.unstrip_protocol(p), found[p]) for p in sorted(found)]
    base = os.path.abspath(root)
    return [(os.path.join(root, os.path.relpath(p, base)), found[p]) for p in sorted(found)]


def walk_files(root: str) -> Iterator[str]:
    """Yield every file below ``root`` as a URI in the root's own scheme, in sorted order."""
    for uri, _ in list_files(root):
        yield uri


def relative_to(root: str, uri: str) -> str:
    """The path of ``uri`` below ``root``, with ``/`` separators."""
    if not is_remote(root):
        return os.path.relpath(uri, root).replace(os.sep, "/")
    fs, r = filesystem(root)
    return posixpath.relpath(fs._strip_protocol(uri), r)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)
