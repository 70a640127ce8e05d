#!/usr/bin/env bash
# Benchmark: `ripple verify` against reladiff (data-diff's maintained fork, from PyPI) on the same
# PostgreSQL pair (the stack's source and replica), then Ripple alone on Redis and the index.
#
# The table (BENCH_ROWS rows, default 10,000,000: bigint key, int, numeric, text, timestamptz) is
# made identically in both databases. Two cases: equal, then scattered (BENCH_DIFFS rows, default
# 300, spread over the key space in the replica: a third deleted, a third changed, a third extra).
# Each case runs BENCH_RUNS times (default 3) per tool, alternating which goes first; the figures
# are the median and the range of the wall time, the tool's peak RSS, and the machine's CPU
# seconds over the run (the tool and both databases: what the comparison costs in all), per
# million rows too. Both tools must report the same number of differences.
#
# Settings, the same for both where they have one: reladiff's hashdiff at its documented defaults
# (bisection factor 32, threshold 16,384) with --threads 2 (two queries per database at once, for
# two cores); Ripple's segment checksums at the same factor and threshold, two segments at once.
# Asymmetries that remain: reladiff hashes with md5, Ripple with PostgreSQL's hashtextextended
# (2.4 times cheaper per row here); reladiff is Python, Ripple a release build; reladiff reports
# differences, Ripple also samples keys and checks column types.
#
# With BENCH_STORES=1 (default) the same table is then written into Redis and the index by
# `ripple backfill` (timed too: the rate of a backfill) and `ripple verify` compares each with the
# source BENCH_RUNS times. BENCH_STORE_ROWS (default BENCH_ROWS) limits the rows for the stores.
# BENCH_PG=0 skips the PostgreSQL pair (and keeps the tables as they are), BENCH_LOAD=0 the
# backfills (the stores keep what an earlier run wrote), BENCH_SINKS="cache search" picks stores;
# BENCH_KEEP=1 leaves the tables, keys and index in place at the end (they are removed otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${BENCH_ROWS:-10000000}
runs=${BENCH_RUNS:-3}
diffs=${BENCH_DIFFS:-300}
store_rows=${BENCH_STORE_ROWS:-$rows}
source_url=postgres://postgres@127.0.0.1:15432/app
replica_url=postgres://postgres@127.0.0.1:15433/replica
table=bench_verify
dir=target/bench
mkdir -p "$dir"

scripts/stack up >/dev/null
cargo build --release --bin ripple 2>&1 | tail -1
ripple=$PWD/target/release/ripple
if [ ! -x bench/.venv/bin/reladiff ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q "reladiff==0.6.0" psycopg2-binary
fi
reladiff=bench/.venv/bin/reladiff

make_table() { # url, rows
  psql -XAtq "$1" -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS public.$table" -c \
    "CREATE TABLE public.$table (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2), \
     note text, at timestamptz); \
     INSERT INTO public.$table SELECT i, i % 997, (i % 100000) / 100.0, 'note ' || i, \
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second' FROM generate_series(1, $2) i" \
    -c "VACUUM ANALYZE public.$table"
}
if [ "${BENCH_PG:-1}" = 1 ]; then
  echo "== $rows rows in the source and the replica"
  make_table "$source_url" "$rows" & make_table "$replica_url" "$rows" & wait
fi

cat > "$dir/verify.toml" <<TOML
[kafka]
brokers = "127.0.0.1:19092"
topics = ["bench.public.$table"]
[source]
url = "$source_url"
topic_prefix = "bench"
[sinks.replica]
type = "postgres"
url = "$replica_url"
[sinks.cache]
type = "redis"
url = "redis://127.0.0.1:16379"
key = "bv:{table}:{pk}"
[sinks.search]
type = "elasticsearch"
url = "http://127.0.0.1:9251"
index = "bench-verify-{table}"
[[routes]]
topics = ["bench.public.$table"]
sinks = ["replica", "cache", "search"]
TOML

busy() { # the machine's busy CPU jiffies so far
  awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat
}
hz=$(getconf CLK_TCK)

# One timed run: prints "wall_s rss_kb cpu_s differences".
measure() { # tool (ripple|reladiff), sink
  local out=$dir/verify.out before after
  before=$(busy)
  if [ "$1" = ripple ]; then
    /usr/bin/time -f "%e %M" -o "$dir/verify.time" "$ripple" verify --config "$dir/verify.toml" \
      --sink "$2" --table "public.$table" --json > "$out" 2>/dev/null || true
    after=$(busy)
    found=$(python3 -c "import json,sys; t=json.load(open('$out'))['tables'][0]; print(t['missing']+t['extra']+t['different'])")
  else
    /usr/bin/time -f "%e %M" -o "$dir/verify.time" "$reladiff" "${source_url/postgres:/postgresql:}" "public.$table" \
      "${replica_url/postgres:/postgresql:}" "public.$table" -k id -c account -c amount -c note -c at \
      -j 2 --stats > "$out" 2>/dev/null || true
    after=$(busy)
    found=$(awk '/exclusive to table A|exclusive to table B|rows updated/{n+=$1} END{print n+0}' "$out")
  fi
  echo "$(tail -1 "$dir/verify.time") $(( (after - before) / hz )).$(( (after - before) % hz * 100 / hz )) $found"
}

summary() { # label, file of "wall rss cpu found" lines
  python3 - "$1" "$2" "$rows_now" <<'PY'
import statistics, sys
label, path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [list(map(float, l.split())) for l in open(path) if l.strip()]
wall, rss, cpu, found = zip(*runs)
med = statistics.median
print(f"{label:34} {med(wall):7.2f} s ({min(wall):.2f}-{max(wall):.2f})  "
      f"RSS {med(rss)/1024:6.0f} MiB  CPU {med(cpu):6.1f} s ({med(cpu)/rows*1e6:5.2f} s per M rows)  "
      f"differences {sorted(set(int(f) for f in found))}")
PY
}

compare_case() { # case label
  : > "$dir/ripple.runs"; : > "$dir/reladiff.runs"
  for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then order="ripple reladiff"; else order="reladiff ripple"; fi
    for tool in $order; do measure "$tool" replica >> "$dir/$tool.runs"; done
  done
  summary "ripple verify, $1" "$dir/ripple.runs"
  summary "reladiff -j 2, $1" "$dir/reladiff.runs"
}

rows_now=$rows
if [ "${BENCH_PG:-1}" = 1 ]; then
echo "== the PostgreSQL pair: $rows rows, $runs runs each, order alternated (median, range)"
compare_case equal
third=$((diffs / 3))
step=$((rows / third))
psql -XAtq "$replica_url" -v ON_ERROR_STOP=1 -c \
  "DELETE FROM public.$table WHERE id IN (SELECT 1 + k * $step FROM generate_series(0, $third - 1) k); \
   UPDATE public.$table SET amount = -1 WHERE id IN (SELECT 2 + k * $step FROM generate_series(0, $third - 1) k); \
   INSERT INTO public.$table SELECT $rows + 10 + k * 7, 1, 1, 'extra', NULL FROM generate_series(1, $third) k"
compare_case "$((3 * third)) scattered differences"
fi

if [ "${BENCH_STORES:-1}" = 1 ]; then
  echo "== Redis and the index: $store_rows rows written by ripple backfill, then verified"
  rows_now=$store_rows
  if [ "${BENCH_LOAD:-1}" = 1 ]; then
    if [ "$store_rows" != "$rows" ]; then make_table "$source_url" "$store_rows"; fi
    redis-cli -p 16379 --scan --pattern "bv:$table:*" | xargs -r -n 10000 redis-cli -p 16379 DEL >/dev/null
    redis-cli -p 16379 DEL "ripple:keys:cache:public.$table" "ripple:keys:cache:public.$table:versions" >/dev/null
    curl -s -X DELETE "http://127.0.0.1:9251/bench-verify-$table" >/dev/null
  fi
  for sink in ${BENCH_SINKS:-cache search}; do
    if [ "${BENCH_LOAD:-1}" = 1 ]; then
      start=$(date +%s.%N)
      "$ripple" backfill --config "$dir/verify.toml" --sink "$sink" --table "public.$table" > "$dir/backfill-$sink.out"
      end=$(date +%s.%N)
      python3 -c "print(f'backfill into $sink: {$store_rows/($end-$start):,.0f} rows/s ({$end-$start:.0f} s)')"
    fi
    : > "$dir/$sink.runs"
    for _ in $(seq 1 "$runs"); do measure ripple "$sink" >> "$dir/$sink.runs"; done
    summary "ripple verify, $sink" "$dir/$sink.runs"
  done
fi
# Millions of keys left in the stack's Redis would make every test that lists keys crawl, and a
# restart reload them for minutes: the stores are emptied unless BENCH_KEEP=1.
if [ "${BENCH_KEEP:-0}" != 1 ]; then
  redis-cli -p 16379 --scan --pattern "bv:$table:*" --count 10000 | xargs -r -n 10000 redis-cli -p 16379 UNLINK >/dev/null
  redis-cli -p 16379 UNLINK "ripple:keys:cache:public.$table" "ripple:keys:cache:public.$table:versions" >/dev/null
  curl -s -X DELETE "http://127.0.0.1:9251/bench-verify-$table" >/dev/null
  psql -XAtq "$source_url" -c "DROP TABLE IF EXISTS public.$table"
  psql -XAtq "$replica_url" -c "DROP TABLE IF EXISTS public.$table"
fi
echo "cores: $(nproc)"
