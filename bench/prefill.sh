# Sourced by the benchmarks: builds ripple (release) and pre-fills a fresh topic with real Debezium
# events of the seed table. Sets: ripple, url, id, topic, size. BENCH_CHANGES changes (default 200,000),
# BENCH_MIX the percentages of inserts, updates and deletes (default 60,30,10). BENCH_RIPPLE: a
# ripple binary to measure instead of this tree's (an earlier build, e.g. bench/ab.sh's A).
changes=${BENCH_CHANGES:-200000}
id="bench_$(date +%s)"
scripts/stack up >/dev/null
if [[ -n ${BENCH_RIPPLE:-} ]]; then
  ripple=$BENCH_RIPPLE
else
  cargo build --release --bin ripple 2>&1 | tail -1
  ripple=target/release/ripple
fi
url=postgres://postgres@127.0.0.1:15432/app

echo "== pre-filling topic $id.public.$id with $changes changes through Debezium"
$ripple loadgen --url "$url" --table "$id" --drop --setup --count 0 >/dev/null
scripts/stack debezium "${id//_/-}" "$id" "public.$id" initial >/dev/null
RIPPLE_LOG=warn $ripple loadgen --url "$url" --table "$id" --count "$changes" --seed 1 --mix "${BENCH_MIX:-60,30,10}"
topic="$id.public.$id"
# Debezium publishes each change once, plus a tombstone after each delete; wait until all arrived.
last=-1; stable=0
while :; do
  size=$(scripts/stack topic-size "$topic")
  if (( size >= changes )) && (( size == last )); then stable=$((stable + 1)); else stable=0; fi
  (( stable >= 3 )) && break
  last=$size
  sleep 1
done
echo "topic holds $size records"
mkdir -p target/bench
