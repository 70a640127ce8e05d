#!/usr/bin/env bash
# Benchmark: Ripple's throughput into Redis and into the search index, each next to the raw rate of
# the same store measured in the same run: redis-benchmark (pipelined SETs, and the sink's own
# guarded script by EVALSHA, the fair figure) for Redis; plain `_bulk` requests of the same
# documents (the table's rows, Ripple's mapping) for the index. The topic is pre-filled with real
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
# The fair raw figure for a guarded write: the sink's own script (versions.lua, members.lua and
# apply.lua, as the sink loads them) by EVALSHA with the same four keys and a 408-byte JSON
# document, pipelined 100 deep. Random keys and commits: a repeated key with an older commit is
# refused, as a stale change would be.
echo "== raw Redis: redis-benchmark, pipelined EVALSHA of the sink's guarded write"
sha=$(cat sinks/redis/src/versions.lua sinks/redis/src/members.lua sinks/redis/src/apply.lua | redis-cli -p 16379 -x SCRIPT LOAD)
doc='{"transaction_id":"6f1c2a4e-0c2b-4d9e-9a57-1b2c3d4e5f61","user_id":"someone","timestamp":"2024-03-01T10:00:00.000000","amount":"123.45","currency":"USD","city":"Somewhere","country":"Nowhere","merchant_name":"Acme and Sons","payment_method":"credit_card","ip_address":"10.1.2.3","voucher_code":"","affiliate_id":"6f1c2a4e-0c2b-4d9e-9a57-1b2c3d4e5f60","modified_by":null,"modified_at":null,"change_info":null}'
raw_eval=$(redis-benchmark -p 16379 -n "$changes" -P 100 -r 100000000 -q EVALSHA "$sha" 4 "$id:raw:__rand_int__" \
  "$id:raw:versions" "$id:raw:truncated" "$id:raw:keys" __rand_int__ 0 0 json "$doc" 2>/dev/null \
  | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | cut -d. -f1)

echo "== ripple into the search index"
search_rate=$(run_sink search "[sinks.search]
type = \"elasticsearch\"
url = \"http://127.0.0.1:9251\"
index = \"$id-{table}\"")
# The fair raw figure for the index: the same documents (the source table's rows, as PostgreSQL
# renders them in JSON) into an index with the mapping Ripple gave its own, by plain `_bulk` index
# requests of the sink's default size (1,000 documents) and concurrency (2 in flight), bodies built
# before the clock starts. Ripple's events also carry deletes and updates; these are all inserts.
echo "== raw index: the table's rows by plain _bulk, Ripple's mapping, 1,000 per request, 2 in flight"
curl -s "http://127.0.0.1:9251/$id-$id/_mapping" > "$dir/$id-mapping.json"
key=$(psql "$url" -Atc "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) where i.indrelid = 'public.$id'::regclass and i.indisprimary limit 1")
psql "$url" -Atc "select row_to_json(t) from public.$id t" > "$dir/$id-rows.ndjson"
raw_search=$(python3 - "$dir/$id-mapping.json" "$dir/$id-rows.ndjson" "$id-raw" "$key" <<'PY'
import concurrent.futures, json, sys, time, urllib.request
mapping_file, rows_file, index, key = sys.argv[1:5]
def call(method, path, body, ctype="application/json"):
    req = urllib.request.Request("http://127.0.0.1:9251" + path, data=body, method=method, headers={"Content-Type": ctype})
    return urllib.request.urlopen(req).read()
mappings = next(iter(json.load(open(mapping_file)).values()))["mappings"]
call("PUT", "/" + index, json.dumps({"mappings": mappings}).encode())
rows = [line for line in open(rows_file) if line.strip()]
bodies = []
for base in range(0, len(rows), 1000):
    lines = []
    for row in rows[base:base + 1000]:
        lines.append(json.dumps({"index": {"_index": index, "_id": str(json.loads(row)[key])}}))
        lines.append(row.strip())
    bodies.append(("\n".join(lines) + "\n").encode())
start = time.time()
with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for reply in pool.map(lambda b: json.loads(call("POST", "/_bulk", b, "application/x-ndjson")), bodies):
        assert not reply["errors"], "the raw bulk was refused"
print(int(len(rows) / (time.time() - start)))
PY
)
cat <<TABLE

store           ripple events/s   raw store ops/s   ripple peak RSS
Redis           ${redis_rate:-?}             ${raw_redis:-?}            $(cat "$dir/$id-cache.rss") KB
  raw guarded   ${raw_eval:-?} EVALSHA/s (the sink's script): Ripple at $(( ${redis_rate:-0} * 100 / ${raw_eval:-1} ))%
search index    ${search_rate:-?}             ${raw_search:-?}            $(cat "$dir/$id-search.rss") KB
  of raw _bulk  Ripple at $(( ${search_rate:-0} * 100 / ${raw_search:-1} ))%
($changes changes, $size records, $(wc -l < "$dir/$id-rows.ndjson") rows for the raw index, $(nproc) cores; raw rates use the same node, same run)
TABLE
curl -s -X DELETE "http://127.0.0.1:9251/$id-*" >/dev/null || true
redis-cli -p 16379 --scan --pattern "$id*" | xargs -r -n 1000 redis-cli -p 16379 DEL >/dev/null
redis-cli -p 16379 --scan --pattern "ripple:keys:public.$id*" | xargs -r redis-cli -p 16379 DEL >/dev/null
scripts/stack delete-connector "${id//_/-}" >/dev/null
