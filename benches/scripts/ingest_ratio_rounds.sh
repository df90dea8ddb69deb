#!/usr/bin/env bash
# (b)/(a) of the ingest bench over many rounds, on 100,000-span blocks: the
# ratio moves by ±5 % from run to run of one binary on a 2-core machine, so
# one run says little. Runs the given bench binaries in turn, `rounds`
# times (alternating, when more than one is given), prints every
# round's row and then, per binary, the median, the range and how many
# rounds were at most 3x.
#
#   cargo bench --bench ingest --no-run   # prints the binary's path
#   benches/scripts/ingest_ratio_rounds.sh <bench binary> [<bench binary B>] [rounds]
set -euo pipefail
bins=() rounds=8
for arg in "$@"; do
  if [[ $arg =~ ^[0-9]+$ ]]; then rounds=$arg; else bins+=("$arg"); fi
done
[ ${#bins[@]} -ge 1 ] || { echo "usage: $0 <bench binary> [<bench binary B>] [rounds]" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
  for bin in "${bins[@]}"; do
    row=$(SPANLAKE_BENCH_E2E_TRACES=20 "$bin" --bench 2>&1 | grep -E '^\| 100000 ' || true)
    [ -n "$row" ] || { echo "$bin printed no 100000-span row" >&2; exit 1; }
    echo "round $round $(basename "$bin") $row"
    printf '%s\t%s\n' "$bin" "$row" >>"$out"
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys
by = {}
for line in open(sys.argv[1]):
    bin, row = line.rstrip('\n').split('\t', 1)
    by.setdefault(bin, []).append(float(re.search(r'\*\*([0-9.]+)×\*\*', row).group(1)))
for bin, ratios in by.items():
    under = sum(r <= 3.0 for r in ratios)
    print(f"{bin}: (b)/(a) median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x, "
          f"at most 3x in {under} of {len(ratios)} rounds")
PY
