#!/usr/bin/env bash
# Benchmark: Ripple's throughput into Redis and into the search index, each next to the raw rate of
# the same store measured in the same run: redis-benchmark (pipelined SETs) for Redis, a loop of
# plain `_bulk` requests of same-sized documents for the index. The topic is pre-filled with real
# Debezium events of the seed table (BENCH_CHANGES, default 200,000).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/prefill.sh
. bench/prefill.sh
dir=target/bench

run_sink() { # name, sink section
  local name=$1 section=$2
  cat > "$dir/$id-$name.toml" <<TOML
[kafka]
brokers = "127.0.0.1:19092"
group_id = "$id-$name"
topics = ["$topic"]
$section
[[routes]]
topics = ["$topic"]
sinks = ["$name"]
TOML
  /usr/bin/time -f "%M" -o "$dir/$id-$name.rss" $ripple run --config "$dir/$id-$name.toml" --exit-when-idle-ms 2000 2>"$dir/$id-$name.log" \
    | sed -n 's/.*, \([0-9]*\) events\/s$/\1/p'
}

echo "== ripple into Redis (json documents)"
redis_rate=$(run_sink cache "[sinks.cache]
type = \"redis\"
url = \"redis://127.0.0.1:16379\"
key = \"$id:{pk}\"
format = \"json\"")
echo "== raw Redis: redis-benchmark, pipelined SETs of 400-byte values"
raw_redis=$(redis-benchmark -p 16379 -t set -n "$changes" -P 100 -d 400 -q 2>/dev/null | sed -n 's/.*SET: \([0-9.]*\) requests.*/\1/p' | cut -d. -f1)

echo "== ripple into the search index"
search_rate=$(run_sink search "[sinks.search]
type = \"elasticsearch\"
url = \"http://127.0.0.1:9251\"
index = \"$id-{table}\"")
echo "== raw index: _bulk requests of 5,000 same-sized documents"
raw_search=$(python3 - "$changes" "$id" <<'PY'
import json, sys, time, urllib.request
n, prefix = int(sys.argv[1]), sys.argv[2]
doc = {"user_id": "someone", "amount": "123.45", "currency": "USD", "city": "Somewhere", "country": "Nowhere",
       "merchant_name": "Acme and Sons", "payment_method": "credit_card", "ip_address": "10.1.2.3",
       "voucher_code": "", "affiliate_id": "6f1c2a4e-0c2b-4d9e-9a57-1b2c3d4e5f60", "timestamp": "2024-03-01T10:00:00.000000"}
start = time.time()
for base in range(0, n, 5000):
    lines = []
    for i in range(base, min(n, base + 5000)):
        lines.append(json.dumps({"index": {"_index": prefix + "-raw", "_id": str(i)}}))
        lines.append(json.dumps(dict(doc, transaction_id=str(i))))
    req = urllib.request.Request("http://127.0.0.1:9251/_bulk", data=("\n".join(lines) + "\n").encode(),
                                 headers={"Content-Type": "application/x-ndjson"}, method="POST")
    urllib.request.urlopen(req).read()
print(int(n / (time.time() - start)))
PY
)
cat <<TABLE

store           ripple events/s   raw store ops/s   ripple peak RSS
Redis           ${redis_rate:-?}             ${raw_redis:-?}            $(cat "$dir/$id-cache.rss") KB
search index    ${search_rate:-?}             ${raw_search:-?}            $(cat "$dir/$id-search.rss") KB
($changes changes, $size records, $(nproc) cores; raw rates use the same node, same run)
TABLE
curl -s -X DELETE "http://127.0.0.1:9251/$id-*" >/dev/null || true
redis-cli -p 16379 --scan --pattern "$id*" | xargs -r -n 1000 redis-cli -p 16379 DEL >/dev/null
redis-cli -p 16379 --scan --pattern "ripple:keys:public.$id*" | xargs -r redis-cli -p 16379 DEL >/dev/null
scripts/stack delete-connector "${id//_/-}" >/dev/null
