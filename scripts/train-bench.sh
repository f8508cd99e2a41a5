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
# Under each table, the rounds that met each goal and the median round. TRAIN_BENCH_LOG=FILE keeps
# the rounds' SUMMARY lines in FILE.
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
BPJ=$(mktemp "${TMPDIR:-/tmp}/train-bench-bp.XXXXXX")
if [ -n "${TRAIN_BENCH_LOG:-}" ]; then
  LOG="$TRAIN_BENCH_LOG"
  : >"$LOG"
  trap 'rm -f "$BPJ"' EXIT
else
  LOG=$(mktemp "${TMPDIR:-/tmp}/train-bench.XXXXXX")
  trap 'rm -f "$LOG" "$BPJ"' EXIT
fi

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
GOALS = (5.0, 1.3, 5.0, 3.0, 0.8)  # small, dense, sparse, fwd, matrix/sgemm
def table(title, bp_key, ours_epoch, fwd_ratio, sgemm_key, extra=lambda o1, o2, bp: ""):
    print(title)
    print("round  small(1t)  dense(2t)  sparse(2t)  fwd(2t)  matrix/sgemm(1t)")
    ratios = []
    for r, x in sorted(runs.items()):
        o1, o2, bp = x["ours1"], x["ours2"], x[bp_key]
        row = (bp['small']['epoch_s'] / o1['small'][ours_epoch],
               bp['big']['epoch_s'] / o2['big-dense'][ours_epoch],
               bp['big']['epoch_s'] / o2['big-sparse'][ours_epoch],
               fwd_ratio(o2['fwd'], bp['big']),
               o1['big-dense'][sgemm_key])
        ratios.append(row)
        print(f"{r:5}  {row[0]:8.2f}x  {row[1]:8.2f}x  {row[2]:9.2f}x  {row[3]:6.2f}x"
              f"  {100 * row[4]:14.0f}%" + extra(o1, o2, bp))
    # Rounds that met each goal (>= 5x, 1.3x, 5x, 3x, 80%), and the median round.
    met = [sum(row[i] >= g for row in ratios) for i, g in enumerate(GOALS)]
    med = [sorted(row[i] for row in ratios)[len(ratios) // 2] for i in range(len(GOALS))]
    n = len(ratios)
    print(f"  met  {met[0]:6}/{n:<2}  {met[1]:6}/{n:<2}  {met[2]:7}/{n:<2}  {met[3]:4}/{n:<2}  {met[4]:13}/{n:<2}")
    print(f"  med  {med[0]:8.2f}x  {med[1]:8.2f}x  {med[2]:9.2f}x  {med[3]:6.2f}x  {100 * med[4]:14.0f}%")


table("median epochs (forward calls) of each side in the round:", "brainpy", "epoch_s",
      lambda ours, bp: ours["steps_per_s"] / bp["fwd_steps_per_s"], "matrix_vs_sgemm",
      lambda o1, o2, bp: f"   (BrainPy small {1e3 * bp['small']['epoch_s']:.1f} ms, big {bp['big']['epoch_s']:.3f} s;"
                         f" ours small {1e3 * o1['small']['epoch_s']:.2f} ms, dense {o2['big-dense']['epoch_s']:.3f} s)")
table("best epochs (forward calls) of each side in the round:", "brainpy_best", "best_epoch_s",
      lambda ours, bp: bp["fwd_s"] / ours["best_s_per_100_steps"], "matrix_vs_sgemm_best")
PY
