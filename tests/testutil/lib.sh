# shellcheck shell=bash
# Shared by the shell test suites (tests/slurm, tests/multihost; sourced by
# their own lib.sh): messages, a clock and polling. Set NAME (the message
# prefix) before calling say or fail.

say() { echo "$NAME: $*"; }
fail() {
  echo "$NAME: FAIL: $*" >&2
  exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# seconds_since MS: "12.3" seconds from the time MS (from now_ms) to now.
seconds_since() {
  local d=$(($(now_ms) - $1))
  echo "$((d / 1000)).$(((d % 1000) / 100))"
}

# json FILE FIELD...: fields of a JSON file (a run's --summary-json) on one
# line; FIELD a.b is field b of object a. Strings and numbers print as they
# are, anything else as JSON (null, true, {...}); a missing field fails.
json() {
  python3 -c 'import functools, json, sys
d = json.load(open(sys.argv[1]))
fields = (functools.reduce(lambda v, k: v[k], f.split("."), d) for f in sys.argv[2:])
print(*(v if isinstance(v, str) else json.dumps(v) for v in fields))' "$@"
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds; false after SECONDS.
wait_for() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}
# has_line FILE TEXT: FILE exists and has a line containing TEXT.
has_line() { [ -f "$1" ] && grep -q -- "$2" "$1"; }
