#!/usr/bin/env bash
# One prepared run on a lent GPU host (docs/scaling.md, "Measured on a GPU host"): the
# embedded stack (private Redis, SQLite) with CUDA workers, a large job through several
# upload streams and API processes, and a thinned curve of worker processes.
#
# Such a host has Python and torch but not the service's other packages, and no network:
# make the wheels here first (bench/gpu_wheels.sh puts them in .whl/ and the MNIST test
# files in .gpudata/), carry both, and run this from the repository's root there.
# Every figure goes to stdout and, with $OUT set, to $OUT/gpu-host.log.
set -uo pipefail

OUT=${OUT:-/tmp}
LOG="$OUT/gpu-host.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
export DIGITS_DATA_DIR=.gpudata/mnist DIGITS_DEVICE=cuda
# A chunk is one forward pass: 1,024 images a CUDA call instead of 128.
export DIGITS_CHUNK_SIZE=1024 DIGITS_MAX_BATCH_SIZE=1024
scans=/tmp/digits-gpu-scans

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "cores: $(nproc); $(python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())')"
    # The thinned curve. The 2026-12-04 run (one client process, 8 streams) stayed near
    # 10,000 images/s from 4 workers to 9: three client processes tell whether the one
    # client or SQLite's write lock held it there.
    echo "== SQLite's write lock per image on this host's cores (bench/sqlite_lock.py)"
    python3 bench/sqlite_lock.py --images 20000
    echo "== 3 client processes x 4 upload streams, 6 API processes, 60,000 images"
    python3 bench/scaling.py --database sqlite --images 60000 --scans $scans \
        --workers 1,4,8,14 --clients 3 --parallel 4 --api-processes 6
} 2>&1 | grep --line-buffered -v "^job \|it/s\]" | tee "$LOG"
