#!/usr/bin/env bash
# Side-by-side training benchmark: brainstate-nn's bench_train example and BrainPy's
# shared/anchors/bench_train.py, alternated for several rounds in one session, then the ratios
# the speed goals are stated in, round by round:
#   small   tutorial epoch, ours on one thread vs BrainPy            (goal >= 5x)
#   dense   700->1000->20 epoch, both on two cores                   (goal >= 1.3x)
#   sparse  the same network with 1% input, ours on two threads      (goal >= 5x)
#   fwd     forward steps per second, ours on two threads            (goal >= 3x)
#   sgemm   one-thread matrix rate over the epoch / sgemm 1024 trials run between its epochs
#           (the measurement of shared/anchors/machine_limits.sh)    (goal >= 80%)
# Two tables: the ratios of the median epochs (median forward calls), and of the best ones
# (BrainPy's from --json-out; the best epoch against the best sgemm trial is how
# machine_limits.sh measures, keeping the best of several trials because others share the CPUs).
#
#   scripts/train-bench.sh [rounds (3)] [epochs (6)]
#
# Needs the BrainPy venv (bash ../shared/anchors/setup.sh). The machine is shared: compare the
# ratios of one round, not absolute times across rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
EPOCHS="${2:-6}"
. scripts/anchors.sh bench_train.py
cargo build --release -q -p brainstate-nn --example bench_train
BIN=target/release/examples/bench_train
LOG=$(mktemp "${TMPDIR:-/tmp}/train-bench.XXXXXX")
BPJ=$(mktemp "${TMPDIR:-/tmp}/train-bench-bp.XXXXXX")
trap 'rm -f "$LOG" "$BPJ"' EXIT

for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
  MATMUL_NUM_THREADS=1 "$BIN" all "$EPOCHS" | tee /dev/stderr | sed -n "s/^SUMMARY /ours1 $r /p" >>"$LOG"
  "$PY" "$ANCHORS/bench_train.py" --size both --repeats 1 --epochs $((EPOCHS + 2)) --fwd-repeats 5 \
    --json-out "$BPJ" | tee /dev/stderr | sed -n "s/^SUMMARY /brainpy $r /p" >>"$LOG"
  echo "brainpy_best $r $(python3 -c 'import json, sys
res = json.load(open(sys.argv[1]))["results"]
print(json.dumps({s: {"epoch_s": min(r["steady_epoch_min_s"] for r in v["runs"]),
                      "fwd_s": min(r["fwd_min_s"] for r in v["runs"])} for s, v in res.items()}))' "$BPJ")" >>"$LOG"
  MATMUL_NUM_THREADS=2 "$BIN" all "$EPOCHS" | tee /dev/stderr | sed -n "s/^SUMMARY /ours2 $r /p" >>"$LOG"
done 2>&1 | grep -E '^== |^\[|steady epoch median' >&2

python3 - "$LOG" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    who, r, js = line.split(" ", 2)
    runs.setdefault(int(r), {})[who] = json.loads(js)
def table(title, bp_key, ours_epoch, fwd_ratio, sgemm_key, extra=lambda o1, o2, bp: ""):
    print(title)
    print("round  small(1t)  dense(2t)  sparse(2t)  fwd(2t)  matrix/sgemm(1t)")
    for r, x in sorted(runs.items()):
        o1, o2, bp = x["ours1"], x["ours2"], x[bp_key]
        print(f"{r:5}  {bp['small']['epoch_s'] / o1['small'][ours_epoch]:8.2f}x"
              f"  {bp['big']['epoch_s'] / o2['big-dense'][ours_epoch]:8.2f}x"
              f"  {bp['big']['epoch_s'] / o2['big-sparse'][ours_epoch]:9.2f}x"
              f"  {fwd_ratio(o2['fwd'], bp['big']):6.2f}x"
              f"  {100 * o1['big-dense'][sgemm_key]:14.0f}%" + extra(o1, o2, bp))


table("median epochs (forward calls) of each side in the round:", "brainpy", "epoch_s",
      lambda ours, bp: ours["steps_per_s"] / bp["fwd_steps_per_s"], "matrix_vs_sgemm",
      lambda o1, o2, bp: f"   (BrainPy small {1e3 * bp['small']['epoch_s']:.1f} ms, big {bp['big']['epoch_s']:.3f} s;"
                         f" ours small {1e3 * o1['small']['epoch_s']:.2f} ms, dense {o2['big-dense']['epoch_s']:.3f} s)")
table("best epochs (forward calls) of each side in the round:", "brainpy_best", "best_epoch_s",
      lambda ours, bp: bp["fwd_s"] / ours["best_s_per_100_steps"], "matrix_vs_sgemm_best")
PY
