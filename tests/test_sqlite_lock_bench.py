"""bench/sqlite_lock.py measures what it says: both sides' write transactions, timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_lock_bench_times_the_api_and_a_worker_storing_real_images(data_dir, tmp_path):
    env = {**os.environ, "DIGITS_DATA_DIR": str(data_dir), "DIGITS_RUNTIME": "torch",
           "TMPDIR": str(tmp_path)}
    env.pop("DIGITS_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "bench/sqlite_lock.py", "--images", "700",
                          "--chunk", "256"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["images"] == 700
    assert figures["api_lock_us"] > 0 and figures["worker_lock_us"] > 0
    assert figures["sqlite_ceiling_images_per_s"] > 0
    # The job and two runs of uploads; three chunks of results, with their leases.
    assert "api   : write lock held" in out and "in 3 transactions" in out
    assert "in 6 transactions" in out and "INSERT INTO items" in out
    assert "UPDATE items SET status" in out
