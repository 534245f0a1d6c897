#!/usr/bin/env bash
# scripts/bench consumer on a few thousand events, against the broker of
# scripts/test (CLERK_SYNC_TEST_BROKERS): the run must end with figures, and
# the ceiling must have written the consumer's final rows (same_final_rows),
# or the benchmark measures nothing. No timing is checked here.
set -uo pipefail
: "${CLERK_SYNC_TEST_BROKERS:?the broker of scripts/test}"
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(BENCH_BROKERS=$CLERK_SYNC_TEST_BROKERS BENCH_SKIP_BOOTSTRAP=1 BENCH_SKIP_BUILD=1 BENCH_EVENTS=4000 BENCH_USERS=40 \
  "$repo/scripts/bench-consumer" 2>&1)
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || { echo "bench_smoke: scripts/bench-consumer exited $rc" >&2; exit 1; }
grep -qx 'same_final_rows=yes' <<<"$out" || { echo "bench_smoke: no same_final_rows=yes" >&2; exit 1; }
