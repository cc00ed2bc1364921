"""Turn a multipart request into (filename, bytes) pairs, expanding zip archives.

Checks here are cheap and by magic bytes only; anything that passes still goes
through the full decoder in the worker, where a corrupt image fails alone.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from werkzeug.datastructures import FileStorage

from api.errors import ApiError
from shared.formats import ALLOWED_FORMATS, skipped_in_zip, sniff_format
from shared.models import ItemStatus

ZIP_MAGIC = b"PK\x03\x04"
# A member's local header: signature, 22 bytes we do not need, name and extra lengths.
LOCAL_HEADER = struct.Struct("<4s22xHH")


@dataclass
class Upload:
    filename: str
    content: bytes
    status: str = ItemStatus.PENDING
    error: str | None = None


def check(filename: str, content: bytes, max_bytes: int) -> Upload:
    """An upload that will be queued, or one already failed with a clear reason."""
    if not content:
        return Upload(filename, b"", ItemStatus.FAILED, "empty: the file is empty (0 bytes)")
    if len(content) > max_bytes:
        return Upload(filename, b"", ItemStatus.FAILED,
                      f"too_large: {len(content):,} bytes, more than the {max_bytes:,} allowed")
    if sniff_format(content) is None:
        return Upload(filename, content, ItemStatus.FAILED,
                      "unsupported_format: not an image in an accepted format "
                      f"({', '.join(ALLOWED_FORMATS)})")
    return Upload(filename, content)


def expand_zip(name: str, content: bytes, max_bytes: int, max_total: int) -> Iterator[Upload]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        members = [m for m in archive.infolist() if not skipped_in_zip(m.filename)]
    except zipfile.BadZipFile as exc:
        yield Upload(name, b"", ItemStatus.FAILED, f"corrupt: bad zip archive ({exc})")
        return
    if sum(m.file_size for m in members) > max_total:
        raise ApiError(413, "request_too_large",
                       f"{name} expands to more than {max_total:,} bytes")
    for member in members:
        if member.file_size > max_bytes:
            yield Upload(member.filename, b"", ItemStatus.FAILED,
                         f"too_large: {member.file_size:,} bytes, more than {max_bytes:,}")
            continue
        try:
            data = _member_bytes(archive, content, member)
        except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
            yield Upload(member.filename, b"", ItemStatus.FAILED, f"corrupt: {exc}")
            continue
        yield check(member.filename, data, max_bytes)


def _member_bytes(archive: zipfile.ZipFile, content: bytes, member: zipfile.ZipInfo) -> bytes:
    """A stored (uncompressed) member is sliced straight out of the upload, its size and
    CRC checked as zipfile checks them: the client packs plain files that way, and
    zipfile's reader costs several times more per member. Anything else goes through it."""
    if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1:  # 0x1: encrypted
        return archive.read(member)
    try:
        magic, name_len, extra_len = LOCAL_HEADER.unpack_from(content, member.header_offset)
    except struct.error:
        raise zipfile.BadZipFile(f"{member.filename}: truncated archive") from None
    if magic != ZIP_MAGIC:
        raise zipfile.BadZipFile(f"{member.filename}: bad local file header")
    start = member.header_offset + LOCAL_HEADER.size + name_len + extra_len
    data = content[start : start + member.file_size]
    if len(data) != member.file_size or zlib.crc32(data) != member.CRC:
        raise zipfile.BadZipFile(f"{member.filename}: bad CRC-32 or truncated data")
    return data


def collect(files: list[FileStorage], max_bytes: int, max_total: int) -> list[Upload]:
    uploads: list[Upload] = []
    for storage in files:
        name = storage.filename or storage.name or "upload"
        content = storage.read()
        if content.startswith(ZIP_MAGIC):
            uploads.extend(expand_zip(name, content, max_bytes, max_total))
        else:
            uploads.append(check(name, content, max_bytes))
    return uploads
