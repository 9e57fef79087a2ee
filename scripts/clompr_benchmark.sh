#!/usr/bin/env bash
# CL-OMPR (compressive k-means, the `pycle` package from PyPI) and ML-Mat-VAMP side by side on the
# SAME sketches (docs/sketched-clustering.md#cl-ompr-side-by-side).
#
#   scripts/clompr_benchmark.sh [OUT_DIR] [extra options of clompr_benchmark.py]
#
# Creates a virtual environment under /tmp (once), installs numpy, scipy, matplotlib (pycle
# imports it) and pycle from the package index, builds the `mlmatvamp` binary, and runs
# scripts/clompr_benchmark.py, which generates the mixtures, sketches them with `mlmatvamp
# sketch`, decodes each sketch with `mlmatvamp cluster` and with pycle's CL-OMPR, and writes
# OUT_DIR/clompr_benchmark.json and a table on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-/tmp/mlmatvamp-clompr}"
shift || true
venv="${CLOMPR_VENV:-/tmp/mlmatvamp-clompr-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy scipy matplotlib pycle
(cd "$root" && cargo build --release --quiet -p mlmatvamp-cli)
# numpy's BLAS with one thread by default: with two OpenBLAS threads on a 2-core machine that
# other processes keep busy, CL-OMPR's fits ran 5-50 times slower (thread contention;
# docs/sketched-clustering.md#cl-ompr-side-by-side). Override to compare.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
"$venv/bin/python" "$here/clompr_benchmark.py" --bin "$root/target/release/mlmatvamp" --out "$out" "$@"
