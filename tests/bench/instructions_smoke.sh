#!/usr/bin/env bash
# scripts/bench instructions on a few hundred items a case: the run must end
# with a positive count for both sides of every case, or the benchmark
# measures nothing (the driver refuses to count a case whose work failed:
# a refused signature, an event that did not decode). No count is checked.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(BENCH_SKIP_BOOTSTRAP=1 BENCH_SKIP_BUILD=1 BENCH_INSTRUCTIONS_ITEMS=200 "$repo/scripts/bench-instructions" 2>&1)
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || { echo "instructions_smoke: scripts/bench-instructions exited $rc" >&2; exit 1; }
for c in classify decode log_logfmt log_json apply; do
  grep -Eq "^$c +[1-9][0-9]* +[1-9][0-9]* +[0-9.]+ " <<<"$out" ||
    { echo "instructions_smoke: no counts for $c" >&2; exit 1; }
done
