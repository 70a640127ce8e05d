#!/usr/bin/env bash
# Benchmark: Ripple's throughput into the replica PostgreSQL. Pre-fills a topic with real Debezium
# events of the seed table (BENCH_CHANGES changes, default 200,000: inserts, updates, deletes), then
# times `ripple run` (release build) from the first record to the last applied batch, and verifies.
set -euo pipefail
cd "$(dirname "$0")/.."
changes=${BENCH_CHANGES:-200000}
id="bench_$(date +%s)"
group="$id"

scripts/stack up >/dev/null
cargo build --release --bin ripple 2>&1 | tail -1
ripple=target/release/ripple
url=postgres://postgres@127.0.0.1:15432/app

echo "== pre-filling topic $id.public.$id with $changes changes through Debezium"
$ripple loadgen --url "$url" --table "$id" --drop --setup --count 0 >/dev/null
scripts/stack debezium "${id//_/-}" "$id" "public.$id" initial >/dev/null
$ripple loadgen --url "$url" --table "$id" --count "$changes" --seed 1
topic="$id.public.$id"
# Debezium publishes each change once, plus a tombstone after each delete; wait for all of them.
want=$changes
last=-1; stable=0
while :; do
  size=$(scripts/stack topic-size "$topic")
  if (( size >= want )) && (( size == last )); then stable=$((stable + 1)); else stable=0; fi
  (( stable >= 3 )) && break
  last=$size
  sleep 1
done
echo "topic holds $size records"

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
[[routes]]
topics = ["$topic"]
sinks = ["replica"]
TOML

echo "== ripple run (release) into an empty replica table"
/usr/bin/time -f "peak RSS %M KB" $ripple run --config "$dir/$id.toml" --exit-when-idle-ms 2000 2> "$dir/$id.log" | tee "$dir/$id.summary"
grep "peak RSS" "$dir/$id.log" || true
$ripple verify --config "$dir/$id.toml" --table "public.$id"
echo "cores: $(nproc)"
scripts/stack delete-connector "${id//_/-}" >/dev/null
