#!/usr/bin/env bash
# Benchmark: two Ripple builds on one pre-filled topic into the replica PostgreSQL, to show what a
# change costs (or gains) in throughput and CPU. A is an earlier revision, B is this tree.
#
#   BENCH_A=8f47845 bench/ab.sh                     # 200,000 changes, 2 runs of each build
#   BENCH_A=8f47845 BENCH_RUNS=3 BENCH_CHANGES=500000 bench/ab.sh
#
# A is built (release) in a worktree under target/ab/, B is `cargo build --release` here. The topic
# is filled once through real Debezium (bench/prefill.sh); then the builds run alternately, A B A B,
# each with a fresh consumer group into a fresh replica schema (the sink's `schema`), so every run
# applies the whole topic to empty tables on the same database settings. Per run: events/s from
# Ripple's own summary (first record to last apply), CPU seconds per million events (user + sys of
# the ripple process, /usr/bin/time) and peak RSS; then per build the median and range. Each run is
# checked with `ripple verify` (B's binary) before the next.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${BENCH_A:?set BENCH_A to the git revision to compare against}
runs=${BENCH_RUNS:-2}

a_tree=target/ab/src-$rev
if [[ ! -d $a_tree ]]; then
  git worktree add --detach "$a_tree" "$rev" >/dev/null
fi
echo "== building A ($rev, release)"
(cd "$a_tree" && cargo build --release --bin ripple --target-dir ../target 2>&1 | tail -1)
a_bin=target/ab/target/release/ripple

# shellcheck source=bench/prefill.sh
. bench/prefill.sh
b_bin=$ripple
dir=target/bench; mkdir -p "$dir"

declare -a results
for ((i = 1; i <= runs; i++)); do
  for build in A B; do
    bin=$a_bin; [[ $build == B ]] && bin=$b_bin
    run="${id}_${build,,}$i"
    cfg="$dir/$run.toml"
    cat > "$cfg" <<TOML
[kafka]
brokers = "127.0.0.1:19092"
group_id = "$run"
topics = ["$topic"]
[source]
url = "$url"
[sinks.replica]
type = "postgres"
url = "postgres://postgres@127.0.0.1:15433/replica"
schema = "$run"
max_connections = ${BENCH_MAX_CONNECTIONS:-4}
[[routes]]
topics = ["$topic"]
sinks = ["replica"]
TOML
    /usr/bin/time -f "%U %S %M" -o "$dir/$run.time" "$bin" run --config "$cfg" --exit-when-idle-ms 2000 \
      > "$dir/$run.summary" 2> "$dir/$run.log"
    summary=$(cat "$dir/$run.summary")
    events=$(grep -oE 'applied [0-9]+ events' <<< "$summary" | grep -oE '[0-9]+')
    rate=$(grep -oE '[0-9]+ events/s' <<< "$summary" | grep -oE '[0-9]+')
    read -r user sys rss < "$dir/$run.time"
    cpu=$(awk -v u="$user" -v s="$sys" -v e="$events" 'BEGIN { printf "%.1f", (u + s) * 1e6 / e }')
    # The source table's rows in the run's schema, compared with verify's merge-join.
    "$b_bin" verify --config "$cfg" --table "public.$id" > "$dir/$run.verify" 2>&1 \
      || { cat "$dir/$run.verify"; echo "ab: run $run does not verify" >&2; exit 1; }
    printf '%-2s run %d: %8s events/s  %6s CPU s per million events  peak RSS %6d KB  (%s events)\n' \
      "$build" "$i" "$rate" "$cpu" "$rss" "$events"
    results+=("$build $rate $cpu")
  done
done

echo
# Median and range of one column (2: events/s, 3: CPU) of one build's runs.
stats() {
  printf '%s\n' "${results[@]}" | awk -v b="$1" -v c="$2" '$1 == b { print $c }' | sort -n | awk '
    { v[NR] = $1 }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%.1f (%.1f-%.1f)", m, v[1], v[NR] }'
}
echo "build   events/s median (range)     CPU s per million events median (range)"
for build in A B; do
  printf '%-5s   %-26s  %s\n' "$build" "$(stats "$build" 2)" "$(stats "$build" 3)"
done
echo "A: $rev, B: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src sinks || echo ' + uncommitted changes'); cores: $(nproc)"
scripts/stack delete-connector "${id//_/-}" >/dev/null
