"""Which image formats the service takes, a cheap check of them by magic bytes, and
which members of a zip archive become images.

Kept apart from `shared.imaging` so that the API can check uploads without
importing the normalisation code (numpy, SciPy) it never runs.
"""

from __future__ import annotations

from pathlib import PurePosixPath

# Formats we open; anything else (EPS above all) is refused before decoding.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF87a": "GIF",
    b"GIF89a": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


def sniff_format(data: bytes) -> str | None:
    """The image format named by the magic bytes, or None."""
    for magic, name in _SIGNATURES.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def skipped_in_zip(name: str) -> bool:
    """Zip members that are not images to classify: folders, hidden files and macOS
    resource forks. The server and the client that packs uploads agree on this."""
    parts = PurePosixPath(name).parts
    return name.endswith("/") or any(p.startswith(".") or p == "__MACOSX" for p in parts)
