"""Turn a multipart request into (filename, bytes) pairs, expanding zip archives.

Checks here are cheap and by magic bytes only; anything that passes still goes
through the full decoder in the worker, where a corrupt image fails alone. Uploads
are read one at a time out of the request's spooled files (Werkzeug keeps a large
body on disk), so the API holds one run of images at a time, not the request.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile, TemporaryFile
from typing import IO

from flask import Request
from werkzeug.datastructures import FileStorage

from api.errors import ApiError
from shared.formats import ALLOWED_FORMATS, skipped_in_zip, sniff_format
from shared.models import ItemStatus

ZIP_MAGIC = b"PK\x03\x04"
# A member's local header: signature, 22 bytes we do not need, name and extra lengths.
LOCAL_HEADER = struct.Struct("<4s22xHH")


# File parts of one request kept in memory, together; the rest go to temporary files.
SPOOL_BYTES = 4 * 1024 * 1024


class SpooledRequest(Request):
    """Werkzeug keeps every file part under 500 KiB in memory, so a request of many
    mid-sized scans was held whole. Here the parts of one request share SPOOL_BYTES of
    memory (small PNGs stay there: no file per digit); past it they go to disk."""

    _spooled = 0
    _last: SpooledTemporaryFile | None = None

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None) -> IO[bytes]:
        last = self._last
        if last is not None and not last._rolled:  # written whole by now, and rewound
            at = last.tell()
            self._spooled += last.seek(0, io.SEEK_END)
            last.seek(at)
        self._last = None
        left = SPOOL_BYTES - self._spooled
        if left <= 0:
            return TemporaryFile("rb+")
        self._last = SpooledTemporaryFile(max_size=left, mode="rb+")  # noqa: SIM115
        return self._last


@dataclass
class Upload:
    filename: str
    content: bytes
    status: str = ItemStatus.PENDING
    error: str | None = None


def _too_large(size: int, max_bytes: int) -> str:
    return f"too_large: {size:,} bytes, more than the {max_bytes:,} allowed"


def check(filename: str, content: bytes, max_bytes: int) -> Upload:
    """An upload that will be queued, or one already failed with a clear reason."""
    if not content:
        return Upload(filename, b"", ItemStatus.FAILED, "empty: the file is empty (0 bytes)")
    if len(content) > max_bytes:
        return Upload(filename, b"", ItemStatus.FAILED, _too_large(len(content), max_bytes))
    if sniff_format(content) is None:
        return Upload(filename, content, ItemStatus.FAILED,
                      "unsupported_format: not an image in an accepted format "
                      f"({', '.join(ALLOWED_FORMATS)})")
    return Upload(filename, content)


def _read_file(filename: str, stream: IO[bytes], max_bytes: int) -> Upload:
    """A plain file of the request, checked; one past the limit is never read."""
    size = stream.seek(0, io.SEEK_END)
    if size > max_bytes:
        return Upload(filename, b"", ItemStatus.FAILED, _too_large(size, max_bytes))
    stream.seek(0)
    return check(filename, stream.read(), max_bytes)


# Archive formats by magic bytes: an archive inside an archive is not expanded.
_ARCHIVE_MAGIC = {ZIP_MAGIC: "zip", b"PK\x05\x06": "zip", b"\x1f\x8b": "gzip",
                  b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"7z\xbc\xaf\x27\x1c": "7z",
                  b"Rar!\x1a\x07": "rar", b"\x28\xb5\x2f\xfd": "zstd"}
_READABLE = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


@dataclass
class Budget:
    """What the zips of one request may still expand to, in bytes and in members: the
    caps hold per request, not per zip, so many small bombs cost as much as one."""

    bytes_left: int
    members_left: int

    def take(self, name: str, members: int, size: int) -> None:
        if members > self.members_left:
            raise ApiError(413, "request_too_large",
                           f"{name}: the zips of one request may hold at most "
                           f"{self.members_left:,} more members; send "
                           "large archives in several requests")
        if size > self.bytes_left:
            raise ApiError(413, "request_too_large",
                           f"{name}: the zips of one request may expand to at most "
                           f"{self.bytes_left:,} more bytes (DIGITS_MAX_EXPANDED_BYTES); "
                           "send large archives in several requests")
        self.members_left -= members
        self.bytes_left -= size


def _entry_count(stream: IO[bytes]) -> int | None:
    """The member count the archive's end record declares, read before any member's
    header is parsed: 100,000 entries are refused without 100,000 objects."""
    try:
        end = zipfile._EndRecData(stream)  # private, stable since Python 2
    except OSError:
        return None
    return None if not end else end[zipfile._ECD_ENTRIES_TOTAL]


@dataclass
class _Opened:
    """A zip whose central directory was read and whose members were counted against
    the request's budget, nothing expanded yet; or the one failed item it became."""

    name: str
    stream: IO[bytes]
    members: list[zipfile.ZipInfo]
    failed: Upload | None = None

    def __len__(self) -> int:
        return 1 if self.failed else len(self.members)


def _open_zip(name: str, stream: IO[bytes], max_bytes: int, budget: Budget) -> _Opened:
    declared = _entry_count(stream)
    if declared is not None:
        budget.take(name, declared, 0)
    try:
        entries = zipfile.ZipFile(stream).infolist()  # a passed file stays open
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        return _Opened(name, stream, [],
                       Upload(name, b"", ItemStatus.FAILED, f"corrupt: bad zip archive ({exc})"))
    if declared is None or len(entries) > declared:
        budget.take(name, len(entries) - (declared or 0), 0)
    members = [m for m in entries if not skipped_in_zip(m.filename)]
    # Declared sizes are what a member may expand to: the reader stops one byte past it.
    # Members refused unread count too: an archive that claims that much is refused whole.
    budget.take(name, 0, sum(m.file_size for m in members))
    return _Opened(name, stream, members)


def _expand(opened: _Opened, max_bytes: int, skip: int = 0) -> Iterator[Upload]:
    if opened.failed:
        yield opened.failed
        return
    for member in opened.members[skip:]:
        failed = _refused(member, max_bytes)
        if failed:
            yield Upload(member.filename, b"", ItemStatus.FAILED, failed)
            continue
        try:
            data = _member_bytes(opened.stream, member)
        except (zipfile.BadZipFile, zlib.error) as exc:
            yield Upload(member.filename, b"", ItemStatus.FAILED, f"corrupt: {exc}")
            continue
        kind = next((k for magic, k in _ARCHIVE_MAGIC.items() if data.startswith(magic)), None)
        if kind:
            yield Upload(member.filename, b"", ItemStatus.FAILED,
                         f"nested_archive: a {kind} archive inside {opened.name}; archives "
                         "inside archives are not expanded, send it on its own")
            continue
        yield check(member.filename, data, max_bytes)


def expand_zip(name: str, content: bytes, max_bytes: int,
               budget: Budget | int) -> Iterator[Upload]:
    """One zip's members as uploads (stored or deflated only, read with a bounded reader),
    within `budget` (a Budget shared by the request's zips, or a byte cap of its own)."""
    if isinstance(budget, int):
        budget = Budget(budget, 1 << 62)
    yield from _expand(_open_zip(name, io.BytesIO(content), max_bytes, budget), max_bytes)


def _refused(member: zipfile.ZipInfo, max_bytes: int) -> str | None:
    if member.flag_bits & 0x1:
        return "unsupported_zip: the member is encrypted"
    if member.compress_type not in _READABLE:
        return (f"unsupported_zip: compression method {member.compress_type} "
                f"({zipfile.compressor_names.get(member.compress_type, 'unknown')}); "
                "only stored or deflated members are read")
    if member.file_size > max_bytes:
        return f"too_large: {member.file_size:,} bytes, more than {max_bytes:,}"
    return None


def _member_bytes(stream: IO[bytes], member: zipfile.ZipInfo) -> bytes:
    """A member's bytes, read straight out of the upload and never past its declared
    size: stored members are read as they are (the client packs plain files that way,
    and zipfile's reader costs several times more per member), deflated ones inflated
    with a cap of one byte more than declared, so a member that lies about its size is
    caught without expanding it. Size and CRC are checked as zipfile checks them."""
    stream.seek(member.header_offset)
    header = stream.read(LOCAL_HEADER.size)
    if len(header) < LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f"{member.filename}: truncated archive")
    magic, name_len, extra_len = LOCAL_HEADER.unpack(header)
    if magic != ZIP_MAGIC:
        raise zipfile.BadZipFile(f"{member.filename}: bad local file header")
    stream.seek(member.header_offset + LOCAL_HEADER.size + name_len + extra_len)
    if member.compress_type == zipfile.ZIP_STORED:
        data = stream.read(member.file_size)
    else:
        data = _inflate(stream, member.compress_size, member.file_size + 1)
    if len(data) > member.file_size:
        raise zipfile.BadZipFile(f"{member.filename}: expands past its declared "
                                 f"{member.file_size:,} bytes")
    if len(data) != member.file_size or zlib.crc32(data) != member.CRC:
        raise zipfile.BadZipFile(f"{member.filename}: bad CRC-32 or truncated data")
    return data


def _inflate(stream: IO[bytes], compressed: int, limit: int) -> bytes:
    """At most `limit` bytes of a raw deflate stream, reading its `compressed` bytes in
    blocks: a member that declares a huge compressed size is not read whole."""
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    parts, size = [], 0
    while compressed > 0 and size < limit:
        block = stream.read(min(compressed, 1 << 16))
        if not block:
            break
        compressed -= len(block)
        parts.append(inflate.decompress(block, limit - size))
        size += len(parts[-1])
    return b"".join(parts)


class Collected:
    """A request's uploads, read and expanded one at a time as they are iterated: every
    zip's directory was read and counted against the request's caps already. Its
    length is the number of uploads it yields (files, zip members, failed zips)."""

    def __init__(self, parts: list[tuple[str, IO[bytes]] | _Opened], max_bytes: int):
        self._parts = parts
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return sum(len(p) if isinstance(p, _Opened) else 1 for p in self._parts)

    def __iter__(self) -> Iterator[Upload]:
        return self.after(0)

    def after(self, skip: int) -> Iterator[Upload]:
        """The uploads past the first `skip`, which are passed over unread (a resumed
        add: those are stored already)."""
        for part in self._parts:
            size = len(part) if isinstance(part, _Opened) else 1
            if skip >= size:
                skip -= size
                continue
            if isinstance(part, _Opened):
                yield from _expand(part, self._max_bytes, skip)
            else:
                yield _read_file(*part, self._max_bytes)
            skip = 0


def collect(files: list[FileStorage], max_bytes: int, max_total: int,
            max_members: int = 1 << 62) -> Collected:
    """Every upload of a request. Every zip's directory is read and counted against one
    budget for the request before any member is expanded: a request past the caps is a
    413 without a byte inflated (and so without anything stored)."""
    budget = Budget(max_total, max_members)
    parts: list[tuple[str, IO[bytes]] | _Opened] = []
    for storage in files:
        name = storage.filename or storage.name or "upload"
        stream = storage.stream
        stream.seek(0)
        is_zip = stream.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        stream.seek(0)
        parts.append(_open_zip(name, stream, max_bytes, budget) if is_zip else (name, stream))
    return Collected(parts, max_bytes)
