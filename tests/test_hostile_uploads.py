"""Hostile uploads against the API in a process of its own: bz2, LZMA and deflate bombs
(honest and lying about their size), a 100,000-member zip, many zips in one request,
nested archives, path-traversal names, pixel bombs and truncated files. Every one is a
2xx with failed items or a 413 with JSON, never a 5xx, and the process's peak memory
(its ru_maxrss, measured by itself) stays far under what any bomb expands to."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.conftest import ROOT, mnist_png_bytes

BOMB = 200 * 1024 * 1024  # what each bomb expands to
MEMORY_BOUND = 64 * 1024 * 1024  # peak growth allowed over the warmed-up process


def _zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _declare(archive: bytes, size: int) -> bytes:
    """The one member's declared (uncompressed) size rewritten in both of its headers."""
    out = bytearray(archive)
    struct.pack_into("<L", out, 22, size)  # local file header
    central = out.index(b"PK\x01\x02")
    struct.pack_into("<L", out, central + 24, size)
    return bytes(out)


def _png_bomb() -> bytes:
    """A valid PNG header that declares 100,000 x 100,000 pixels (the API only sniffs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">L", len(data)) + kind + data
                + struct.pack(">L", zlib.crc32(kind + data)))
    ihdr = struct.pack(">LLBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100_000)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Each case a folder of the files one request sends, and what it expects."""
    root = tmp_path_factory.mktemp("hostile")
    zeros = bytes(BOMB)
    png = mnist_png_bytes(0, 1)[0][1]
    cases: dict[str, dict] = {
        "bz2_bomb": {"files": {"b.zip": _zip([("a.png", zeros)], zipfile.ZIP_BZIP2)},
                     "expect": 202, "errors": ["unsupported_zip: compression method 12"]},
        "bz2_bomb_lying": {"files": {"b.zip": _declare(
            _zip([("a.png", zeros)], zipfile.ZIP_BZIP2), 100)},
            "expect": 202, "errors": ["unsupported_zip: compression method 12"]},
        "lzma_bomb_lying": {"files": {"l.zip": _declare(
            _zip([("a.png", zeros)], zipfile.ZIP_LZMA), 100)},
            "expect": 202, "errors": ["unsupported_zip: compression method 14"]},
        "deflate_bomb_lying": {"files": {"d.zip": _declare(
            _zip([("a.png", zeros)], zipfile.ZIP_DEFLATED), 100)},
            "expect": 202, "errors": ["corrupt: a.png: expands past its declared 100 bytes"]},
        "deflate_bomb_big_member": {"files": {"d.zip": _zip([("a.png", zeros)],
                                                            zipfile.ZIP_DEFLATED)},
                                    "expect": 202, "errors": ["too_large: "]},
        "members_100000": {"files": {"m.zip": _zip([(f"{i}.png", b"")
                                                    for i in range(100_000)])},
                           "expect": 413},
        "members_across_zips": {"files": {f"m{n}.zip": _zip([(f"{n}_{i}.png", png)
                                                             for i in range(4_000)])
                                          for n in range(3)},
                                "expect": 413},  # each under the 10,000 cap, not together
        "expansion_across_zips": {"files": {
            f"e{n}.zip": _zip([("a.png", bytes(7 * 1024 * 1024))], zipfile.ZIP_DEFLATED)
            for n in range(40)}, "expect": 413},  # 280 MB together, past 4 x 64 MB
        "nested": {"files": {"n.zip": _zip([("inner.zip", _zip([("a.png", png)])),
                                            ("inner.png.gz", b"\x1f\x8b\x08" + bytes(20)),
                                            ("ok.png", png)])},
                   "expect": 202,
                   "errors": ["nested_archive: a zip archive inside n.zip",
                              "nested_archive: a gzip archive inside n.zip", None]},
        "traversal_names": {"files": {"t.zip": _zip([("../../etc/passwd.png", png),
                                                     ("/abs/x.png", png),
                                                     ("..\\..\\win.png", png)])},
                            # Names are data, never paths on the server; a part
                            # that starts with a dot (..) is skipped like hidden files.
                            "expect": 202, "errors": [None], "names": ["/abs/x.png"]},
        "truncated": {"files": {"t.zip": _zip([("a.png", png)] * 1)[:-30],
                                "half.png": png[: len(png) // 2]},
                      "expect": 202},
        "pixel_bombs": {"files": {"p.png": _png_bomb(),
                                  "g.gif": b"GIF89a" + struct.pack("<HH", 65535, 65535)
                                  + bytes(20),
                                  "t.tif": b"II*\x00" + bytes(60)},
                        "expect": 202, "errors": [None, None, None]},
    }
    for case, spec in cases.items():
        folder = root / case
        folder.mkdir()
        for name, data in spec.pop("files").items():
            (folder / name).write_bytes(data)
        (folder / "expect.json").write_text(json.dumps(spec))
    return root


SCRIPT = r"""
import io, json, resource, sys
from pathlib import Path
from shared import migrate
migrate.upgrade()
from api import create_app
client = create_app({"TESTING": True}).test_client()

def post(folder):
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in sorted(folder.iterdir())
             if p.name != "expect.json"]
    response = client.post("/api/v1/jobs", data={"files": files},
                           content_type="multipart/form-data")
    out = {"status": response.status_code, "body": response.get_json()}
    if response.status_code == 202:
        job = response.get_json()["id"]
        out["items"] = client.get(f"/api/v1/jobs/{job}/results?limit=1000").get_json()["data"]
    return out

root = Path(sys.argv[1])
post(root / "traversal_names")  # warm up: imports, the database, Redis
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
answers = {folder.name: post(folder) for folder in sorted(root.iterdir())}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth": peak - base, "answers": answers}))
"""


def test_hostile_uploads_fail_alone_or_as_413_with_bounded_memory(corpus, tmp_path, redis_db):
    env = {**os.environ, "DIGITS_DATABASE_URL": f"sqlite:///{tmp_path / 'digits.db'}",
           "DIGITS_REDIS_URL": redis_db, "DIGITS_METRICS": "false"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(corpus)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for case, answer in report["answers"].items():
        spec = json.loads((corpus / case / "expect.json").read_text())
        assert answer["status"] == spec["expect"], (case, answer["body"])
        if answer["status"] == 413:
            assert answer["body"]["error"]["code"] == "request_too_large", case
            continue
        items = answer["items"]
        assert items and all(i["status"] in ("pending", "failed") for i in items), case
        for item, error in zip(items, spec.get("errors", []), strict=False):
            if error is None:
                assert item["status"] == "pending", (case, item)
            else:
                assert item["status"] == "failed" and item["error"].startswith(error), (
                    case, item)
        if "names" in spec:
            assert [i["filename"] for i in items] == spec["names"]
    assert report["growth"] < MEMORY_BOUND, f"peak grew {report['growth'] / 2**20:.0f} MiB"
