"""The API's event loop keeps serving while one request waits on SQLite.

`digits api` runs each process's requests on one gevent loop. SQLite waits for its
write lock inside the call (its busy timeout) and so would hold every request of the
process; shared/db.py runs SQLite's calls on gevent's thread pool instead. Checked in
a process of its own, patched by gevent as gunicorn's gevent worker patches the API's.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

# Holds SQLite's write lock for HOLD_S, from a process of its own.
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO t VALUES (1)")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""

# Under gevent: a greenlet ticks every 10 ms while another inserts behind the lock.
WAITER = """
from gevent import monkey
monkey.patch_all()
import json, subprocess, sys, time
import gevent
from sqlalchemy import text
from shared import db

engine = db.make_engine("sqlite:///" + sys.argv[1])
with engine.begin() as c:
    c.execute(text("CREATE TABLE t (x INTEGER)"))
holder = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1], sys.argv[3]],
                          stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "held"
gaps, running = [], [True]

def tick():
    last = time.perf_counter()
    while running:
        gevent.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now

ticker = gevent.spawn(tick)
started = time.perf_counter()
with engine.begin() as c:
    c.execute(text("INSERT INTO t VALUES (2)"))
waited = time.perf_counter() - started
running.clear()
ticker.join()
holder.wait(timeout=30)
with engine.connect() as c:
    rows = c.execute(text("SELECT count(*) FROM t")).scalar()
print(json.dumps({"waited": waited, "longest_gap": max(gaps), "ticks": len(gaps),
                  "rows": rows}))
"""


def test_a_sqlite_lock_wait_does_not_hold_the_event_loop(tmp_path):
    hold_s = 1.0
    out = subprocess.run([sys.executable, "-c", WAITER, str(tmp_path / "loop.db"), HOLDER,
                          str(hold_s)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 2  # both inserts landed
    assert figures["waited"] >= hold_s / 2  # the insert did wait for the lock ...
    # ... and meanwhile the loop ran the other greenlet: before, one gap of ~hold_s.
    assert figures["longest_gap"] < hold_s / 2
    assert figures["ticks"] >= 10
