#!/usr/bin/env bash
# The holdfast demo (`./dev demo`): preempt a 2-rank training job with a real
# SIGTERM mid-epoch, let `holdfast launch` restart it from its checkpoint,
# and show that it ends exactly where a run never interrupted ends: same
# weights hash, same test accuracy, the same loss at every step. Writes
# both loss curves, batch by batch, to a PNG (gnuplot).
#
# docs/demo-loss.png in the repository is this script's loss.png.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: examples/demo.sh [options]

Trains fmnist_mlp (Fashion-MNIST, 784-256-32-10) twice under `holdfast launch`
with the same flags, backing up every --save-freq steps:
  1. preempted: a real SIGTERM goes to one rank mid-epoch; every rank commits
     a checkpoint at the same step and exits 75; `holdfast launch` restarts the
     job, which resumes at the very next batch;
  2. uninterrupted: the reference.
Then prints both weights hashes and test accuracies and compares the two
per-batch loss logs; exit 0 if the runs are identical, 1 if not.
Writes OUT/loss.png (both loss curves, the preemption marked; needs gnuplot),
the runs' logs, summaries (*.json) and per-batch losses (*-loss.csv).

options:
  --build DIR          build directory with the binaries (default: $BUILD_DIR or build)
  --out DIR            output directory (default: BUILD/demo; emptied first)
  --np N               ranks (default 2)
  --epochs N           epochs (default 3; 1200 steps each on the full data)
  --train-samples N    train on the first N samples only (default: all 60000)
  --save-freq N        checkpoint every N steps (default 100)
  --preempt-at-step S  send the SIGTERM once step S is done (default: 40% into
                       epoch 2, or into epoch 1 with --epochs 1)
  -h, --help           this text

Exit codes: 0 the runs match, 1 they differ or a run failed, 2 usage.
USAGE
}

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-build}
out=""
np=2
epochs=3
train_samples=0
save_freq=100
preempt_at=0
batch=50

die_usage() {
  echo "demo: $1 (see --help)" >&2
  exit 2
}
need_value() { [ $# -ge 2 ] || die_usage "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) need_value "$@"; build=$2; shift 2 ;;
    --out) need_value "$@"; out=$2; shift 2 ;;
    --np) need_value "$@"; np=$2; shift 2 ;;
    --epochs) need_value "$@"; epochs=$2; shift 2 ;;
    --train-samples) need_value "$@"; train_samples=$2; shift 2 ;;
    --save-freq) need_value "$@"; save_freq=$2; shift 2 ;;
    --preempt-at-step) need_value "$@"; preempt_at=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown option '$1'" ;;
  esac
done
for n in "$np" "$epochs" "$save_freq"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die_usage "'$n' is not a positive number"
done
for n in "$train_samples" "$preempt_at"; do
  [[ $n =~ ^[0-9]+$ ]] || die_usage "'$n' is not a number"
done

case "$build" in /*) ;; *) build=$root/$build ;; esac
out=${out:-$build/demo}
holdfast=$build/launcher/holdfast
fmnist=$build/examples/fmnist_mlp
for bin in "$holdfast" "$fmnist"; do
  [ -x "$bin" ] || { echo "demo: $bin not found: build first (./dev build)" >&2; exit 1; }
done

samples=$((train_samples > 0 && train_samples < 60000 ? train_samples : 60000))
steps_per_epoch=$(((samples + batch - 1) / batch))
total_steps=$((epochs * steps_per_epoch))
if [ "$preempt_at" -eq 0 ]; then
  epoch=$((epochs >= 2 ? 2 : 1))
  preempt_at=$(((epoch - 1) * steps_per_epoch + steps_per_epoch * 2 / 5))
fi
[ "$preempt_at" -lt "$total_steps" ] ||
  die_usage "--preempt-at-step $preempt_at: the run has only $total_steps steps"

rm -rf "$out"
mkdir -p "$out"

say() { printf '\ndemo: %s\n' "$*"; }

# A demo that stops early (an error, Ctrl-C) leaves no training job behind:
# the launcher, signalled, stops its ranks.
job=""
trap '[ -z "$job" ] || kill -TERM "$job" 2>/dev/null || true' EXIT

# The flags both runs share; each adds its own output files.
flags=(--epochs "$epochs" --batch "$batch" --save-freq "$save_freq" --train-samples "$train_samples")

# Live processes below pid $1 whose command name is $2, from /proc (no
# procps needed).
descendants() {
  local stat line pid comm ppid rest
  local -A parent name
  for stat in /proc/[0-9]*/stat; do
    { read -r line <"$stat"; } 2>/dev/null || continue
    pid=${line%% *}
    comm=${line#*(}
    comm=${comm%)*}
    rest=${line##*) }
    read -r _ ppid _ <<<"$rest"
    parent[$pid]=$ppid
    name[$pid]=$comm
  done
  for pid in "${!parent[@]}"; do
    [ "${name[$pid]}" = "$2" ] || continue
    local p=${parent[$pid]}
    while [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$1" ]; do p=${parent[$p]:-}; done
    if [ "$p" = "$1" ]; then echo "$pid"; fi
  done
  return 0
}

# The rank number of an Open MPI rank's pid.
rank_of() {
  { tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p' || true
}

# The last step in a batch log (0 if none yet).
last_step() {
  local line
  line=$(tail -n 1 "$1" 2>/dev/null || true)
  [[ $line =~ ^([0-9]+), ]] && echo "${BASH_REMATCH[1]}" || echo 0
}

# Starts `holdfast launch` for run $1 in the background (output in
# $out/$1.log, shown indented); sets job and viewer.
start_run() {
  : >"$out/$1.log"
  # mpirun --quiet: its boxed notes on ranks that exit 75 say less than the
  # launcher's own line on each attempt.
  "$holdfast" launch -np "$np" --restart-delay 1 --mpi-args=--quiet -- "$fmnist" "${flags[@]}" \
    --backup-dir "$out/$1-backup" --summary-json "$out/$1.json" \
    --batch-log "$out/$1-loss.csv" >"$out/$1.log" 2>&1 &
  job=$!
  tail -s 0.2 -n +1 -f --pid="$job" "$out/$1.log" | sed -u 's/^/    | /' &
  viewer=$!
}

# Waits for run $1 started by start_run; fails the demo unless it exits 0.
finish_run() {
  local rc=0
  wait "$job" || rc=$?
  job=""
  wait "$viewer" || true
  if [ "$rc" -ne 0 ]; then
    echo "demo: the $1 run failed (exit $rc); its log: $out/$1.log" >&2
    exit 1
  fi
}

# A number from a summary JSON (written by nlohmann::json, one key a line).
field() { sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1"; }

start=$SECONDS
say "fmnist_mlp on $np MPI ranks, $epochs epochs of $steps_per_epoch steps, a checkpoint every" \
  "$save_freq steps; a SIGTERM to one rank once step $preempt_at is done"

say "1/3 preempted run: holdfast launch -np $np -- fmnist_mlp ${flags[*]} --backup-dir ..."
start_run preempted
while [ "$(last_step "$out/preempted-loss.csv")" -lt "$preempt_at" ]; do
  kill -0 "$job" 2>/dev/null || break
  sleep 0.02
done
victim=""
for pid in $(descendants "$job" fmnist_mlp); do
  if [ "$(rank_of "$pid")" = 1 ]; then victim=$pid; fi
done
if [ -z "$victim" ]; then
  echo "demo: rank 1 of the preempted run not found (did it end early? see $out/preempted.log)" >&2
  exit 1
fi
kill -TERM "$victim"
signalled_at=$(last_step "$out/preempted-loss.csv")
printf '    demo: SIGTERM sent to rank 1 (pid %s) after step %s\n' "$victim" "$signalled_at"
finish_run preempted
if ! grep -q "preempted (exit 75)" "$out/preempted.log"; then
  echo "demo: the run ended before the SIGTERM could preempt it; try a smaller --preempt-at-step" >&2
  exit 1
fi

say "2/3 uninterrupted run, same flags: holdfast launch -np $np -- fmnist_mlp ${flags[*]} ..."
start_run reference
finish_run reference

say "3/3 verdict"
resumed_at=$(sed -n '/"resumed_from": {/,/}/s/^ *"step": \([0-9]*\).*/\1/p' "$out/preempted.json")
ref_hash=$(field "$out/reference.json" weights_xxh64)
run_hash=$(field "$out/preempted.json" weights_xxh64)
ref_acc=$(field "$out/reference.json" test_accuracy)
run_acc=$(field "$out/preempted.json" test_accuracy)
ref_steps=$(field "$out/reference.json" steps)
run_steps=$(field "$out/preempted.json" steps)
rows=$(($(wc -l <"$out/reference-loss.csv") - 1))
if cmp -s "$out/reference-loss.csv" "$out/preempted-loss.csv"; then
  losses="identical at all $rows steps"
else
  losses="DIFFERENT (diff $out/reference-loss.csv $out/preempted-loss.csv)"
fi
printf '  %-18s %-22s %s\n' "" "uninterrupted" "preempted + resumed" \
  "weights xxh3-64" "$ref_hash" "$run_hash" \
  "test accuracy" "$ref_acc" "$run_acc" \
  "steps" "$ref_steps" "$run_steps (resumed at step ${resumed_at:-?})"
printf '  %-18s %s\n' "per-batch loss" "$losses"

# The picture: both curves batch by batch, the preemption marked, and a
# zoom on the steps around it.
plot=""
if command -v gnuplot >/dev/null; then
  s=${resumed_at:-$signalled_at}
  lo=$((s > 40 ? s - 40 : 0))
  hi=$((s + 40 < total_steps ? s + 40 : total_steps))
  epoch_tics=""
  for ((e = 1; e <= epochs; e++)); do
    epoch_tics+="${epoch_tics:+, }\"epoch $e\" $(((e - 1) * steps_per_epoch + steps_per_epoch / 2))"
  done
  epoch_lines=""
  for ((e = 1; e < epochs; e++)); do
    epoch_lines+="set arrow from $((e * steps_per_epoch)), graph 0 to $((e * steps_per_epoch)), graph 1 nohead lc rgb '#bbbbbb' dt 3"$'\n'
  done
  if gnuplot 2>"$out/gnuplot.log" <<GNUPLOT; then
set terminal pngcairo size 1400,900 font "DejaVu Sans,12" noenhanced
set output "$out/loss.png"
set datafile separator ","
ref = "$out/reference-loss.csv"
run = "$out/preempted-loss.csv"
s = $s
set multiplot title "fmnist_mlp on $np MPI ranks: preempted by SIGTERM at step $s, restarted by holdfast launch, resumed from its checkpoint\nweights xxh3-64 $run_hash vs $ref_hash uninterrupted; test accuracy $run_acc vs $ref_acc" font ",13"

set size 1,0.6
set origin 0,0.33
set xtics nomirror
set ylabel "training loss of the batch"
set xlabel "step (global batch)"
set logscale y
set grid ytics lc rgb "#e6e6e6"
set x2tics ($epoch_tics) scale 0
set xrange [0:$total_steps]
set x2range [0:$total_steps]
set key top left box opaque
set yrange [0.1:10]
set ytics ("0.1" 0.1, "0.2" 0.2, "0.5" 0.5, "1" 1, "2" 2, "5" 5, "10" 10)
$epoch_lines
set arrow from s, graph 0 to s, graph 1 nohead lc rgb "#d62728" lw 2 dt 2 front
note = sprintf(" SIGTERM to rank 1: every rank saves step %d and exits 75; \n holdfast launch restarts the job, which resumes at step %d ", s, s + 1)
# On the side of the line with room for it.
if (s < 0.55 * $total_steps) { set label 1 note at s, graph 0.93 left front tc rgb "#d62728" } else { set label 1 note at s, graph 0.93 right front tc rgb "#d62728" }
plot ref skip 1 using 1:4 with lines lw 6 lc rgb "#c7c7c7" title "uninterrupted", \
     run skip 1 using 1:(\$1 <= s ? \$4 : NaN) with lines lw 1 lc rgb "#1f77b4" title "preempted run, attempt 1", \
     run skip 1 using 1:(\$1 > s ? \$4 : NaN) with lines lw 1 lc rgb "#ff7f0e" title "attempt 2 (resumed)"

unset arrow
unset label
unset x2tics
unset logscale y
set size 1,0.33
set origin 0,0
set xrange [$lo:$hi]
set autoscale y
set ytics autofreq
set offsets 0, 0, graph 0.3, 0
set key top right box opaque horizontal
set xlabel sprintf("zoom on steps %d to %d: every step's loss after the restart equals the uninterrupted run's", $lo, $hi)
set arrow from s + 0.5, graph 0 to s + 0.5, graph 1 nohead lc rgb "#d62728" lw 2 dt 2 front
plot ref skip 1 using 1:4 with points pt 6 ps 2.2 lc rgb "#9a9a9a" title "uninterrupted", \
     run skip 1 using 1:(\$1 <= s ? \$4 : NaN) with linespoints pt 7 ps 0.8 lw 1 lc rgb "#1f77b4" title "attempt 1", \
     run skip 1 using 1:(\$1 > s ? \$4 : NaN) with linespoints pt 7 ps 0.8 lw 1 lc rgb "#ff7f0e" title "attempt 2"
unset multiplot
GNUPLOT
    plot="$out/loss.png"
  else
    echo "demo: gnuplot failed (see $out/gnuplot.log); no picture" >&2
  fi
else
  echo "demo: gnuplot not found (apt-get install gnuplot-nox): no picture" >&2
fi

echo
if [ -n "$ref_hash" ] && [ "$ref_hash" = "$run_hash" ] && [ "$ref_acc" = "$run_acc" ] &&
  [ "$losses" = "identical at all $rows steps" ] && [ -n "$resumed_at" ]; then
  echo "demo: SAME: preempted at step $resumed_at and resumed, the job ended with the weights," \
    "test accuracy and per-step losses of the uninterrupted run, bit for bit ($((SECONDS - start)) s)"
  rc=0
else
  echo "demo: DIFFERENT: the preempted and resumed run did not end as the uninterrupted one" \
    "(logs and summaries in $out)"
  rc=1
fi
[ -n "$plot" ] && echo "demo: loss curves in $plot"
exit "$rc"
