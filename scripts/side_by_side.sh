#!/usr/bin/env bash
# Side by side with the reference implementations (issue 14, docs/side-by-side.md).
#
#   scripts/side_by_side.sh            # from the repository root
#
# Creates a scratch folder OUTSIDE the repository (${SIDE_BY_SIDE_DIR:-${TMPDIR:-/tmp}/mlmatvamp-side-by-side}),
# fetches vampyre (GAMPTeam/vampyre) and the paper's code (parthe/ML-Mat-VAMP) into it read-only
# (git clone; or, without network access to GitHub, from local git directories given as
# VAMPYRE_GIT=... and MLMATVAMP_REF_GIT=...), creates a venv there with numpy<2, scipy and
# PyWavelets from PyPI, builds our example `side_by_side` in release mode, runs every workload
# on both sides single-threaded, and prints a table of times and ratios (reference / ours).
#
# Nothing is written into the repository except the Cargo build in target/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${SIDE_BY_SIDE_DIR:-${TMPDIR:-/tmp}/mlmatvamp-side-by-side}"
case "$scratch/" in "$root"/*) echo "the scratch folder must be outside the repository" >&2; exit 1;; esac
mkdir -p "$scratch"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1

fetch() { # name url local-git-override
  local dir="$scratch/$1" url="$2" local_git="${3:-}"
  [ -d "$dir" ] && return 0
  if [ -n "$local_git" ]; then
    mkdir -p "$dir" && git --git-dir="$local_git" archive HEAD | tar -x -C "$dir"
  else
    git clone --quiet --depth 1 "$url" "$dir"
  fi
}
fetch vampyre https://github.com/GAMPTeam/vampyre "${VAMPYRE_GIT:-}"
fetch ref https://github.com/parthe/ML-Mat-VAMP "${MLMATVAMP_REF_GIT:-}"

if [ ! -x "$scratch/venv/bin/python" ]; then
  python3 -m venv "$scratch/venv"
  "$scratch/venv/bin/pip" install --quiet "numpy<2" "scipy<1.14" "PyWavelets<1.7"
fi
py="$scratch/venv/bin/python"

(cd "$root" && cargo build --release --quiet -p mlmatvamp-cli --example side_by_side)
ours="$root/target/release/examples/side_by_side"
helper="$root/scripts/side_by_side.py"

reps_trial="${REPS_TRIAL:-5}"
reps_it="${REPS_IT:-3}"
# Rounds per row: the reference and ours alternate ROUNDS times, so that a disturbance of the
# machine (its memory bandwidth varies within minutes) is less likely to hit one side only; the
# order alternates too (reference first in even rounds, ours first in odd ones). The table gives
# the median over rounds of each side and of the per-round ratios, with their range.
rounds="${ROUNDS:-3}"
case "$rounds" in ''|*[!0-9]*|0) echo "ROUNDS must be a whole number of at least 1, got '$rounds'" >&2; exit 1;; esac
rows=()
run() { # label keys(comma-separated) reference-args... -- our-args...   (OUR_THREADS=n: our side on n threads)
  local label="$1" key="$2"; shift 2
  local refargs=() ourargs=()
  while [ "$1" != "--" ]; do refargs+=("$1"); shift; done; shift
  ourargs=("$@")
  local r o rs="" os="" k
  for ((k = 0; k < rounds; k++)); do
    if ((k % 2 == 0)); then
      r="$("$py" "$helper" --vampyre "$scratch/vampyre" --ref "$scratch/ref" "${refargs[@]}" | tail -1)"
      o="$(RAYON_NUM_THREADS="${OUR_THREADS:-1}" "$ours" "${ourargs[@]}" | tail -1)"
    else
      o="$(RAYON_NUM_THREADS="${OUR_THREADS:-1}" "$ours" "${ourargs[@]}" | tail -1)"
      r="$("$py" "$helper" --vampyre "$scratch/vampyre" --ref "$scratch/ref" "${refargs[@]}" | tail -1)"
    fi
    if [ -z "$r" ] || [ -z "$o" ]; then
      echo "no result from $([ -z "$r" ] && echo the reference || echo our side) in round $k of: $label" >&2
      exit 1
    fi
    rs="$rs${rs:+,}$r"
    os="$os${os:+,}$o"
  done
  rows+=("$label"$'\t'"$key"$'\t'"[$rs]"$'\t'"[$os]")
}

for ntr in 200 1000 4000; do
  run "two-layer trial (d 4, n_in 100, sigmoid, 20 its), ntr $ntr; authors' MadVamp" seconds_per_trial \
    two-layer "$ntr" "$reps_trial" -- two-layer "$ntr" "$reps_trial"
done
run "same, ntr 200, ours with warm-started output rows (MapOptions::warm_start, as the authors' code)" seconds_per_trial \
  two-layer 200 "$reps_trial" -- two-layer 200 "$reps_trial" warm
# vampyre's rows: the run's time over its 10 iterations, then (a second table row from the same
# runs) the marginal time of an iteration, (T(10) - T(1)) / 9, in which one-time work cancels.
per_it=seconds_per_iteration,seconds_per_marginal_iteration
run "VAMP per iteration, sparse linear inverse 4096 x 2048, d 1; vampyre" "$per_it" \
  vamp-sparse 4096 2048 10 "$reps_it" -- vamp-sparse 4096 2048 10 "$reps_it"
OUR_THREADS=2 run "same, ours on 2 threads (vampyre on 1)" "$per_it" \
  vamp-sparse 4096 2048 10 "$reps_it" -- vamp-sparse 4096 2048 10 "$reps_it"
run "ML-VAMP probit per iteration, 512 x 4096, d 1; vampyre" "$per_it" \
  mlvamp-probit 512 4096 10 "$reps_it" -- mlvamp-probit 512 4096 10 "$reps_it"

printf '%s\n' "${rows[@]}" | "$py" -c '
import json, sys
from statistics import median
print("| workload | reference | ours | ratio (reference / ours): median of rounds (range) | accuracy (reference / ours) |")
print("|---|---|---|---|---|")
names = {"seconds_per_marginal_iteration": " (marginal: (T(10) - T(1)) / 9)"}
for line in sys.stdin:
    label, keys, r, o = line.rstrip("\n").split("\t")
    r, o = json.loads(r), json.loads(o)
    for key in keys.split(","):
        ratios = [a[key] / b[key] for a, b in zip(r, o)]
        acc = [k for k in r[0] if k.startswith("final")][0]
        unit = lambda s: "%.2f ms" % (1e3 * s)
        print("| %s%s | %s | %s | %.2fx (%.2f-%.2f) | %s: %.3g / %.3g |" % (label,
              names.get(key, ""), unit(median(x[key] for x in r)),
              unit(median(x[key] for x in o)), median(ratios), min(ratios), max(ratios), acc,
              r[-1][acc], o[-1][acc]))
'
echo "($rounds rounds per row, reference and ours alternating; each time the median over repetitions; one thread on both sides unless the row says otherwise; wall time of the solver only)"
