#!/usr/bin/env bash
# Benchmark: Ripple's throughput into the replica PostgreSQL. Pre-fills a topic with real Debezium
# events of the seed table (BENCH_CHANGES changes, default 200,000: inserts, updates, deletes), then
# times `ripple run` (release build) from the first record to the last applied batch, and verifies.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/prefill.sh
. bench/prefill.sh
group="$id"

dir=target/bench; mkdir -p "$dir"
cat > "$dir/$id.toml" <<TOML
[kafka]
brokers = "127.0.0.1:19092"
group_id = "$group"
topics = ["$topic"]
[source]
url = "$url"
[sinks.replica]
type = "postgres"
url = "postgres://postgres@127.0.0.1:15433/replica"
max_connections = ${BENCH_MAX_CONNECTIONS:-4}
[[routes]]
topics = ["$topic"]
sinks = ["replica"]
TOML

echo "== ripple run (release) into an empty replica table"
/usr/bin/time -f "peak RSS %M KB, cpu user %U s sys %S s, wall %e s" $ripple run --config "$dir/$id.toml" --exit-when-idle-ms 2000 2> "$dir/$id.log" | tee "$dir/$id.summary"
grep "peak RSS" "$dir/$id.log" || true
$ripple verify --config "$dir/$id.toml" --table "public.$id"
echo "cores: $(nproc)"
scripts/stack delete-connector "${id//_/-}" >/dev/null
