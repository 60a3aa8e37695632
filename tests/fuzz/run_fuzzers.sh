#!/usr/bin/env bash
# Builds the checkpoint fuzzers with clang (libFuzzer + AddressSanitizer; the
# project itself is built with g++) and runs each for a bounded time from a
# seed corpus generated on the fly. Exits non-zero on any crash, leak,
# oversized allocation or timeout; 77 (CTest: skipped) when clang++ or the
# libFuzzer runtime is missing.
#
# usage: run_fuzzers.sh <source dir> <build dir> <seconds per fuzzer> <source>...
#   the sources (relative to the source dir) the fuzzers link: tests/CMakeLists.txt
#   passes the checkpoint format library's list and the parts of core it uses.
# A failing input is kept in <build dir>/fuzz-artifacts/; reproduce with
#   <fuzzer> <artifact>   (the fuzzers are rebuilt in a temp dir each run; set
#   HOLDFAST_FUZZ_KEEP=1 to keep that dir, its path is printed).
set -euo pipefail

USAGE="usage: run_fuzzers.sh <source dir> <build dir> <seconds> <source>..."
SRC=${1:?$USAGE}
BUILD=${2:?$USAGE}
SECONDS_EACH=${3:?$USAGE}
shift 3
[ $# -gt 0 ] || { echo "$USAGE"; exit 2; }
SOURCES=("$@")
CXX=${HOLDFAST_FUZZ_CXX:-clang++}

skip() { echo "SKIPPED: $*"; exit 77; }
command -v "$CXX" >/dev/null || skip "$CXX not found (Debian: clang)"
[ -f "$BUILD/generated/core/version.h" ] || { echo "no $BUILD/generated/core/version.h: configure first"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/holdfast_fuzz_XXXXXX")
if [ "${HOLDFAST_FUZZ_KEEP:-0}" = 1 ]; then
  echo "work dir kept: $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi
export TMPDIR=$WORK  # the manifest fuzzer's scratch files go here too

echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$WORK/probe.cc"
"$CXX" -fsanitize=fuzzer,address "$WORK/probe.cc" -o "$WORK/probe" 2>"$WORK/probe.log" ||
  skip "$CXX cannot link -fsanitize=fuzzer (Debian: libclang-rt-14-dev): $(head -3 "$WORK/probe.log")"

FLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer -I"$SRC" -I"$BUILD/generated")
LIBS=(-lxxhash -lboost_serialization)

echo "building fuzzers with $("$CXX" --version | head -1)"
objs=()
pids=()
for src in "${SOURCES[@]}"; do
  obj="$WORK/$(echo "$src" | tr / _).o"
  "$CXX" "${FLAGS[@]}" -fsanitize=fuzzer-no-link,address -c "$SRC/$src" -o "$obj" &
  pids+=($!)
  objs+=("$obj")
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" "${FLAGS[@]}" -fsanitize=address "$SRC/tests/fuzz/make_seeds.cc" "${objs[@]}" "${LIBS[@]}" \
  -o "$WORK/make_seeds" &
pid_seeds=$!
"$CXX" "${FLAGS[@]}" -fsanitize=fuzzer,address "$SRC/tests/fuzz/shard_fuzzer.cc" "${objs[@]}" \
  "${LIBS[@]}" -o "$WORK/shard_fuzzer" &
pid_shard=$!
wait $pid_seeds
wait $pid_shard
"$CXX" "${FLAGS[@]}" -fsanitize=fuzzer,address "$SRC/tests/fuzz/manifest_fuzzer.cc" "${objs[@]}" \
  "${LIBS[@]}" -o "$WORK/manifest_fuzzer"

"$WORK/make_seeds" "$WORK/seeds"
ARTIFACTS="$BUILD/fuzz-artifacts"
mkdir -p "$ARTIFACTS"

status=0
for fuzzer in shard manifest; do
  mkdir -p "$WORK/corpus/$fuzzer"
  echo "=== ${fuzzer}_fuzzer for ${SECONDS_EACH}s"
  if "$WORK/${fuzzer}_fuzzer" -max_total_time="$SECONDS_EACH" -rss_limit_mb=512 \
      -malloc_limit_mb=256 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$ARTIFACTS/${fuzzer}-" \
      "$WORK/corpus/$fuzzer" "$WORK/seeds/$fuzzer" >"$WORK/$fuzzer.log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)" "$WORK/$fuzzer.log" || true
  else
    status=1
    echo "FAILED: ${fuzzer}_fuzzer (log tail below; input kept in $ARTIFACTS)"
    grep -vE "^#[0-9]+\s+(NEW|REDUCE|pulse|INITED)" "$WORK/$fuzzer.log" | tail -60
  fi
done
exit $status
