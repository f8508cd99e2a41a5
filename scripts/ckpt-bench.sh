#!/usr/bin/env bash
# Side-by-side checkpoint benchmark: BrainPy and safetensors (shared/anchors/bench_ckpt.py) and
# brainstate's native format (brainstate-core/benches/ckpt.rs) on the same cases, in one session,
# then peak memory of a 512 MiB save and load.
#
#   scripts/ckpt-bench.sh [cases]        # default: 1MiB,64MiB,512MiB,10k_small
#
# Needs the BrainPy venv (bash ../shared/anchors/setup.sh). The machine is shared: the load
# average is printed before and after each part; compare ratios, not absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${1:-1MiB,64MiB,512MiB,10k_small}"
. scripts/anchors.sh bench_ckpt.py

BIN=$(cargo bench -p brainstate-core --bench ckpt --no-run 2>&1 | sed -n 's/.*Executable benches\/ckpt.rs (\(.*\))/\1/p')
echo "== brainstate native ($BIN)"
CKPT_SIDE_BY_SIDE="$CASES" "$BIN"
echo "== BrainPy and safetensors"
"$PY" "$ANCHORS/bench_ckpt.py" --cases "$CASES" --methods brainpy,safetensors
echo "== brainstate native again (drift check)"
CKPT_SIDE_BY_SIDE="$CASES" "$BIN"

echo "== peak memory, 512 MiB"
F="${TMPDIR:-/tmp}/bst-ckpt-mem.ckpt"
CKPT_MEM=save CKPT_MEM_MIB=512 CKPT_MEM_FILE="$F" /usr/bin/time -v "$BIN" 2>&1 | grep -E '^save|Maximum resident'
for p in 1 0; do
  CKPT_MEM=load CKPT_MEM_PARALLEL=$p CKPT_MEM_FILE="$F" /usr/bin/time -v "$BIN" 2>&1 | grep -E '^load|Maximum resident'
done
rm -f "$F"
