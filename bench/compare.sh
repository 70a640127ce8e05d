#!/usr/bin/env bash
# Benchmark: Ripple next to Debezium's JDBC sink connector, on the same Debezium topic, into the same
# replica PostgreSQL cluster (a fresh database each: bench_ripple and bench_jdbc).
#
#   bench/compare.sh                       # 1,000,000 changes; about as many records in the topic
#   BENCH_CHANGES=20000 BENCH_LATENCY_COUNT=3000 bench/compare.sh     # a quick trial
#
# 1. Throughput: pre-fills a topic with the seed workload through real Debezium (bench/prefill.sh,
#    BENCH_CHANGES changes, default 1,000,000), stops the source connector, then consumes the whole
#    topic with each system in turn: `ripple run --exit-when-idle-ms 2000` into bench_ripple, and the
#    JDBC sink (a connector on the stack's standalone Connect worker) into bench_jdbc. events/s is the
#    topic's records (tombstones included) over the time from launch (process start / connector
#    creation) until the commit of the target's newest row (its commit timestamp; the stack's
#    replica keeps them), once the target holds what the source holds (polled every second: the row
#    count, then, once that is right, a fingerprint over all columns). Both targets are then checked against the
#    source: `ripple verify` for Ripple, and for both a row count and an md5 over the source's columns,
#    each cast to one type in every database (the JDBC sink declares some columns differently; the
#    differing declarations are printed).
# 2. Latency: a second fresh table and topic with both consumers running live. The source table gets
#    a column _changed_at set by a BEFORE INSERT OR UPDATE trigger (clock_timestamp(), i.e. when the
#    row was written, just before its one-change transaction commits); each target table gets
#    _applied_at, set the same way when the sink writes the row. After a short warm-up (so each sink
#    has created its table), `ripple loadgen --rate BENCH_LATENCY_RATE --count BENCH_LATENCY_COUNT
#    --batch 1` offers the load, and p50/p99 of _applied_at - _changed_at are taken with
#    percentile_cont over the rows whose last change came from that load. The share both have in
#    common, source write to the Debezium record's Kafka timestamp, is shown on its own row. Both
#    consumers share the two cores with Kafka, Connect, both PostgreSQL clusters and the load generator.
# 3. Runs bench/sinks.sh (Ripple into Redis and the search index next to raw store rates) with
#    BENCH_SINKS_CHANGES changes (default: BENCH_CHANGES, at most 200,000) and appends its table.
#
# Peak RSS: Ripple's from /usr/bin/time; the JDBC sink's is the whole Connect worker JVM (ps rss every
# 0.5 s during its run; none of this run's other connectors is on it then, but anything else using the
# stack's worker would count too; its RSS before the run is shown as well).
# Other settings: BENCH_LATENCY_RATE (1000), BENCH_JDBC_BATCH (5000), BENCH_JDBC_SETTINGS (a JSON
# object merged into the sink connector's settings, e.g. '{"use.reduction.buffer": "true"}'),
# BENCH_SINKS=0 skips sinks.sh, BENCH_KEEP=1 keeps the databases, source tables and topics.
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$SECONDS
dir=target/bench
export BENCH_CHANGES=${BENCH_CHANGES:-1000000}
lat_count=${BENCH_LATENCY_COUNT:-30000}
lat_rate=${BENCH_LATENCY_RATE:-1000}
jdbc_batch=${BENCH_JDBC_BATCH:-5000}
sinks_changes=${BENCH_SINKS_CHANGES:-$(( BENCH_CHANGES < 200000 ? BENCH_CHANGES : 200000 ))}
CONNECT=http://127.0.0.1:18083
export PGOPTIONS='-c client_min_messages=warning'
src() { psql -h 127.0.0.1 -p 15432 -U postgres -XAtq -v ON_ERROR_STOP=1 -d app "$@"; }
rep() { local db=$1; shift; psql -h 127.0.0.1 -p 15433 -U postgres -XAtq -v ON_ERROR_STOP=1 -d "$db" "$@"; }
now() { date +%s.%N; }
fail() { echo "compare: $*" >&2; exit 1; }

scripts/stack up >/dev/null
# The JDBC sink is a plug-in on Connect's plugin.path: a worker started before it was installed
# must be restarted once to see it (standalone Connect forgets its connectors when it restarts).
if ! curl -sf "$CONNECT/connector-plugins" | grep -q 'io.debezium.connector.jdbc.JdbcSinkConnector'; then
  echo "== restarting Kafka Connect once, to load the JDBC sink plug-in"
  scripts/stack stop connect && scripts/stack start connect
  curl -sf "$CONNECT/connector-plugins" | grep -q 'io.debezium.connector.jdbc.JdbcSinkConnector' \
    || fail "Connect does not list io.debezium.connector.jdbc.JdbcSinkConnector after a restart"
fi
jdbc_version=$(curl -s "$CONNECT/connector-plugins" | jq -r '.[] | select(.class == "io.debezium.connector.jdbc.JdbcSinkConnector") | .version')

# ---------------------------------------------------------------------------------------------------
# bookkeeping: everything this run creates is removed on exit, whatever happened

connectors=()   # Debezium source connectors to delete on exit
sinks=()        # JDBC sink connectors to delete on exit
ripple_pid=
sampler_pid=
cleanup() {
  set +e
  [ -n "$ripple_pid" ] && kill "$ripple_pid" 2>/dev/null && wait "$ripple_pid" 2>/dev/null
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
  local c
  # delete-connector serves sink connectors too: stop, delete offsets (the consumer group), delete; they
  # have no replication slot to drop.
  for c in "${sinks[@]}" "${connectors[@]}"; do scripts/stack delete-connector "$c" >/dev/null 2>&1; done
  if [ "${BENCH_KEEP:-0}" != 1 ] && [ -n "${id:-}" ]; then
    for db in bench_jdbc bench_ripple; do rep postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; done
    src -c "DROP TABLE IF EXISTS public.$id, public.${id}_lat" >/dev/null 2>&1
    # Without CASCADE: a table of another run still stamped by it keeps it.
    src -c "DROP FUNCTION IF EXISTS public.bench_changed_at()" >/dev/null 2>&1
    scripts/stack reset-topics "^${id}[._]" "$id-ripple" "${id}_lat-ripple" >/dev/null 2>&1
    # bench/sinks.sh leaves its source table and topic behind, like the other benchmarks.
    local sid; sid=$(sed -n 's/^== pre-filling topic \([^.]*\)\..*/\1/p' "$dir/$id-sinks.out" 2>/dev/null)
    if [ -n "$sid" ]; then
      src -c "DROP TABLE IF EXISTS public.$sid" >/dev/null 2>&1
      scripts/stack reset-topics "^${sid}[.]" "$sid-cache" "$sid-search" >/dev/null 2>&1
    fi
  fi
}
trap cleanup EXIT

# Creates a JDBC sink connector NAME from TOPIC into DATABASE's table TABLE.
create_sink() {
  local name=$1 topic=$2 db=$3 table=$4
  jq -n --argjson extra "${BENCH_JDBC_SETTINGS:-{\}}" --arg topic "$topic" --arg db "$db" --arg table "$table" --arg batch "$jdbc_batch" '{
    "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
    "tasks.max": "1",
    "topics": $topic,
    "connection.url": ("jdbc:postgresql://127.0.0.1:15433/" + $db),
    "connection.username": "postgres",
    "connection.password": "postgres",
    "insert.mode": "upsert",
    "delete.enabled": "true",
    "primary.key.mode": "record_key",
    "schema.evolution": "basic",
    "collection.name.format": $table,
    "batch.size": $batch,
    "consumer.override.max.poll.records": $batch
  } + $extra' >"$dir/$name.json"
  local code
  code=$(curl -s -o "$dir/$name.put" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
    --data @"$dir/$name.json" "$CONNECT/connectors/$name/config")
  [[ $code == 20? ]] || fail "creating sink connector $name failed ($code): $(cat "$dir/$name.put")"
  sinks+=("$name")
}

# Fails the run if the connector or its task failed.
check_sink() {
  local status; status=$(curl -s "$CONNECT/connectors/$1/status")
  if echo "$status" | grep -q '"state":"FAILED"'; then
    echo "$status" | jq -r '.. | .trace? // empty' | head -n 30 >&2
    fail "JDBC sink connector $1 failed (see above and scripts/stack logs connect)"
  fi
}

table_exists() { [ "$(rep "$1" -c "SELECT to_regclass('public.$2') IS NOT NULL")" = t ]; }
row_count() { if table_exists "$1" "$2"; then rep "$1" -c "SELECT count(*) FROM public.$2"; else echo -1; fi; }

# ---------------------------------------------------------------------------------------------------
# 1. throughput

# shellcheck source=bench/prefill.sh
. bench/prefill.sh   # sets ripple, url, id, topic, size, changes
connectors+=("${id//_/-}")
# The source connector is done: stop it so that only the consumers run from here on. The topic stays.
scripts/stack delete-connector "${id//_/-}" >/dev/null
connectors=()
src_rows=$(src -c "SELECT count(*) FROM public.$id")

for db in bench_jdbc bench_ripple; do
  rep postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  rep postgres -c "CREATE DATABASE $db" >/dev/null
done

ripple_config() { # file, group, topic
  cat >"$1" <<TOML
[kafka]
brokers = "127.0.0.1:19092"
group_id = "$2"
topics = ["$3"]
[source]
url = "$url"
[sinks.replica]
type = "postgres"
url = "postgres://postgres@127.0.0.1:15433/bench_ripple"
[[routes]]
topics = ["$3"]
sinks = ["replica"]
TOML
}

# The same check of both targets: row count and an md5 over the source's columns in key order, each
# column cast to one type in every database (so a text column holding "12.50" and a numeric 12.50 agree).
row_text="row(transaction_id::text, user_id::text, \"timestamp\"::timestamp, amount::numeric, currency::text,
  city::text, country::text, merchant_name::text, payment_method::text, ip_address::text, voucher_code::text,
  affiliate_id::text, modified_by::text, modified_at::timestamp, change_info::jsonb)::text"
checksum_sql="SELECT count(*) || ' ' || coalesce(md5(string_agg($row_text, ',' ORDER BY transaction_id)), '-') FROM public.$id"
# A cheaper fingerprint of the same, for polling: a target is fully applied once it equals the source's.
fingerprint_sql="SELECT count(*) || ' ' || coalesce(sum(hashtext($row_text)::bigint), 0) FROM public.$id"
src_fingerprint=$(src -c "$fingerprint_sql")

# Polls DATABASE every second until its table holds what the source holds, running CHECK (a command
# that fails the run if the consumer died) in between; prints when the target's newest row version
# was committed (its commit timestamp, so exact whatever the poll interval), or, where the replica
# keeps no commit timestamps, the time of the poll that saw it. The row count is polled first; the
# fingerprint (a full scan) only once the count is right. Polls are kept sparse because a count is a
# scan of the target too: every 0.5 s it took about 15% of a core from whichever system was running.
wait_applied() { # database, progress file, check
  local db=$1 progress=$2 check=$3 rows t last=-2 moved=$SECONDS done_at
  : >"$progress"
  while :; do
    t=$(now)
    rows=$(row_count "$db" "$id")
    echo "$t $rows" >>"$progress"
    if (( rows == src_rows )) && [ "$(rep "$db" -c "$fingerprint_sql")" = "$src_fingerprint" ]; then
      # A last transaction of deletes only leaves no row to date it: then the newest upsert's.
      done_at=$(rep "$db" -c "SELECT extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) FROM public.$id" 2>/dev/null || true)
      echo "${done_at:-$t}"; return
    fi
    eval "$check"
    (( rows != last )) && { last=$rows; moved=$SECONDS; }
    (( SECONDS - moved < 300 )) || fail "$db: no progress for 300 s ($rows rows, the source has $src_rows; see $progress)"
    sleep 1
  done
}

echo "== Ripple: $size records into bench_ripple"
ripple_config "$dir/$id-ripple.toml" "$id-ripple" "$topic"
t0=$(now)
/usr/bin/time -f %M -o "$dir/$id-ripple.rss" $ripple run --config "$dir/$id-ripple.toml" --exit-when-idle-ms 2000 \
  >"$dir/$id-ripple.summary" 2>"$dir/$id-ripple.log" &
ripple_pid=$!
t1=$(wait_applied bench_ripple "$dir/$id-ripple.progress" \
  'kill -0 "$ripple_pid" 2>/dev/null || { tail -n 20 "$dir/$id-ripple.log" >&2; fail "ripple run ended before applying the whole topic"; }')
wait "$ripple_pid" || { tail -n 20 "$dir/$id-ripple.log" >&2; fail "ripple run failed"; }
ripple_pid=
ripple_secs=$(echo "$t1 - $t0" | bc -l)
ripple_rate=$(echo "$size / $ripple_secs" | bc -l | xargs printf '%.0f')
ripple_rss_kb=$(tail -n 1 "$dir/$id-ripple.rss")
sed 's/^/   /' "$dir/$id-ripple.summary"
if $ripple verify --config "$dir/$id-ripple.toml" --table "public.$id" >"$dir/$id-ripple.verify" 2>&1; then
  ripple_verified="ripple verify: equal"
else
  ripple_verified="ripple verify: DIFFERENT"; sed 's/^/   /' "$dir/$id-ripple.verify"
fi

echo "== Debezium JDBC sink $jdbc_version: $size records into bench_jdbc"
connect_pid=$(cat .stack/run/connect.pid)
connect_rss_before_kb=$(ps -o rss= -p "$connect_pid" | tr -d ' ')
echo "$connect_rss_before_kb" >"$dir/$id-jdbc.rss"
( peak=0
  while :; do
    r=$(ps -o rss= -p "$connect_pid" | tr -d ' ') || break
    (( r > peak )) && { peak=$r; echo "$peak" >"$dir/$id-jdbc.rss"; }
    sleep 0.5
  done ) &
sampler_pid=$!
jdbc_name="${id//_/-}-jdbc"
t0=$(now)
create_sink "$jdbc_name" "$topic" bench_jdbc "$id"
t1=$(wait_applied bench_jdbc "$dir/$id-jdbc.progress" 'check_sink "$jdbc_name"')
kill "$sampler_pid"; sampler_pid=
jdbc_secs=$(echo "$t1 - $t0" | bc -l)
jdbc_rate=$(echo "$size / $jdbc_secs" | bc -l | xargs printf '%.0f')
jdbc_rss_kb=$(cat "$dir/$id-jdbc.rss")
printf '   %d records in %.1f s (connector created to last write committed), %d events/s\n' "$size" "$jdbc_secs" "$jdbc_rate"
scripts/stack delete-connector "$jdbc_name" >/dev/null; sinks=()

src_sum=$(src -c "$checksum_sql")
verdict() { # database
  local got; got=$(rep "$1" -c "$checksum_sql" 2>&1) || { echo "checksum query failed: $got"; return; }
  if [ "$got" = "$src_sum" ]; then echo "equal (rows and md5)"; else echo "DIFFERENT: source $src_sum, target $got"; fi
}
ripple_check=$(verdict bench_ripple)
jdbc_check=$(verdict bench_jdbc)
echo "   checksum, Ripple target: $ripple_check; $ripple_verified"
echo "   checksum, JDBC target:   $jdbc_check"
# Where the JDBC sink declared a column differently from the source (Ripple's declarations too).
types_sql="SELECT column_name || ' ' || CASE WHEN data_type = 'USER-DEFINED' THEN udt_name ELSE data_type END
  || coalesce('(' || character_maximum_length || ')', '') FROM information_schema.columns
  WHERE table_schema = 'public' AND table_name = '$id' AND column_name NOT LIKE '\_ripple%' ORDER BY column_name"
src -c "$types_sql" >"$dir/$id-types.source"
for db in bench_ripple bench_jdbc; do rep "$db" -c "$types_sql" >"$dir/$id-types.$db"; done
for db in bench_ripple bench_jdbc; do
  d=$(diff "$dir/$id-types.source" "$dir/$id-types.$db" | sed -n 's/^> //p' | paste -sd ';' | sed 's/;/; /g' || true)
  echo "   column types differing from the source in $db: ${d:-none}"
done

# ---------------------------------------------------------------------------------------------------
# 2. latency at a fixed offered rate, both consumers live

lid="${id}_lat"
ltopic="$lid.public.$lid"
echo "== latency: $lat_count changes at $lat_rate/s into $lid, both consumers live"
$ripple loadgen --url "$url" --table "$lid" --drop --setup --count 0 >/dev/null
src >/dev/null <<SQL
ALTER TABLE public.$lid ADD COLUMN _changed_at timestamptz;
CREATE OR REPLACE FUNCTION public.bench_changed_at() RETURNS trigger AS \$\$
BEGIN NEW._changed_at := clock_timestamp(); RETURN NEW; END \$\$ LANGUAGE plpgsql;
CREATE TRIGGER zz_bench_changed_at BEFORE INSERT OR UPDATE ON public.$lid FOR EACH ROW EXECUTE FUNCTION public.bench_changed_at();
SQL
connectors+=("${lid//_/-}")
scripts/stack debezium "${lid//_/-}" "$lid" "public.$lid" initial >/dev/null
# A warm-up, so that each sink has created its table before the measured load.
RIPPLE_LOG=warn $ripple loadgen --url "$url" --table "$lid" --count 200 --seed 2 >/dev/null
# Start the consumers once the topic exists: one that subscribes before waits for a metadata refresh.
start=$SECONDS
until (( $(scripts/stack topic-size "$ltopic") >= 200 )); do
  (( SECONDS - start < 60 )) || fail "the warm-up's records did not reach $ltopic"
  sleep 0.5
done
create_sink "${lid//_/-}-jdbc" "$ltopic" bench_jdbc "$lid"
ripple_config "$dir/$lid-ripple.toml" "$lid-ripple" "$ltopic"
$ripple run --config "$dir/$lid-ripple.toml" >"$dir/$lid-ripple.summary" 2>"$dir/$lid-ripple.log" &
ripple_pid=$!

# Both targets hold what the source holds: same keys with the same _changed_at.
fence_sql() { # column expression for _changed_at
  echo "SELECT count(*) || ' ' || coalesce(md5(string_agg(transaction_id::text || '@' || extract(epoch FROM $1), ',' ORDER BY transaction_id)), '-') FROM public.$lid"
}
caught_up() { # timeout seconds
  local want start=$SECONDS
  want=$(src -c "$(fence_sql _changed_at)")
  while :; do
    local ok=1 db
    for db in bench_jdbc bench_ripple; do
      table_exists "$db" "$lid" && [ "$(rep "$db" -c "$(fence_sql '_changed_at::timestamptz')")" = "$want" ] || ok=0
    done
    (( ok )) && return 0
    kill -0 "$ripple_pid" 2>/dev/null || { tail -n 20 "$dir/$lid-ripple.log" >&2; fail "ripple run exited"; }
    check_sink "${lid//_/-}-jdbc"
    (( SECONDS - start < $1 )) || { echo "compare: not caught up after $1 s" >&2; return 1; }
    sleep 0.5
  done
}
caught_up 120 || fail "the warm-up did not reach both targets"
for db in bench_jdbc bench_ripple; do
  rep "$db" >/dev/null <<SQL
ALTER TABLE public.$lid ADD COLUMN _applied_at timestamptz;
CREATE OR REPLACE FUNCTION public.bench_applied_at() RETURNS trigger AS \$\$
BEGIN NEW._applied_at := clock_timestamp(); RETURN NEW; END \$\$ LANGUAGE plpgsql;
CREATE TRIGGER zz_bench_applied_at BEFORE INSERT OR UPDATE ON public.$lid FOR EACH ROW EXECUTE FUNCTION public.bench_applied_at();
SQL
done
load_start=$(src -c "SELECT extract(epoch FROM clock_timestamp())")
RIPPLE_LOG=warn $ripple loadgen --url "$url" --table "$lid" --count "$lat_count" --rate "$lat_rate" --batch 1 --seed 3 \
  | sed 's/^/   /'
caught_up 600 || fail "the fixed-rate load did not reach both targets"
kill "$ripple_pid"; wait "$ripple_pid" 2>/dev/null || true; ripple_pid=
latency() { # database -> "p50 p99 rows"
  rep "$1" -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
      round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1), count(*)
    FROM (SELECT extract(epoch FROM _applied_at - _changed_at::timestamptz) * 1000 AS ms FROM public.$lid
          WHERE _applied_at IS NOT NULL AND _changed_at::timestamptz >= to_timestamp($load_start)) s"
}
read -r ripple_p50 ripple_p99 ripple_lat_rows < <(latency bench_ripple)
read -r jdbc_p50 jdbc_p99 jdbc_lat_rows < <(latency bench_jdbc)
echo "   rows measured: Ripple $ripple_lat_rows, JDBC sink $jdbc_lat_rows (rows whose last change came from the load)"
# The share both have in common: source write to the record's Kafka timestamp (set when Connect's
# producer sent the Debezium record), over every insert and update of the load.
read -r kafka_p50 kafka_p99 kafka_n < <(kcat -b 127.0.0.1:19092 -C -t "$ltopic" -o beginning -e -q -f '%T\t%s\n' |
  python3 -c '
import datetime, json, sys
start = float(sys.argv[1])
ms = []
for line in sys.stdin:
    ts, _, value = line.rstrip("\n").partition("\t")
    if not value or value == "null":
        continue
    after = (json.loads(value).get("payload") or {}).get("after") or {}
    if after.get("_changed_at") is None:
        continue
    changed = datetime.datetime.fromisoformat(after["_changed_at"].replace("Z", "+00:00"))
    if changed.timestamp() >= start:
        ms.append(int(ts) - changed.timestamp() * 1000)
ms.sort()
def pct(p):  # as percentile_cont
    k = (len(ms) - 1) * p
    f = int(k)
    return ms[f] + (ms[min(f + 1, len(ms) - 1)] - ms[f]) * (k - f)
print("%.1f %.1f %d" % (pct(0.5), pct(0.99), len(ms)) if ms else "- - 0")
' "$load_start")
echo "   source to Kafka (shared by both): p50 $kafka_p50 ms, p99 $kafka_p99 ms over $kafka_n records"

# ---------------------------------------------------------------------------------------------------
# 3. Redis and the search index next to raw store rates

sinks_table=
if [ "${BENCH_SINKS:-1}" != 0 ]; then
  echo "== bench/sinks.sh with $sinks_changes changes"
  # Its failure does not void the comparison above: it is reported in place of its table.
  if BENCH_CHANGES=$sinks_changes bench/sinks.sh >"$dir/$id-sinks.out" 2>&1; then
    sinks_table=$(sed -n '/^store /,/^(/p' "$dir/$id-sinks.out")
  else
    sinks_table="bench/sinks.sh FAILED ($dir/$id-sinks.out): $(tail -n 1 "$dir/$id-sinks.out")"
    tail -n 20 "$dir/$id-sinks.out" >&2
  fi
fi

# ---------------------------------------------------------------------------------------------------

mb() { echo "$1 / 1024" | bc -l | xargs printf '%.0f'; }
echo
echo "Ripple vs Debezium JDBC sink $jdbc_version: $changes changes ($size records) through Debezium, $(nproc) cores"
printf '%-30s %10s %9s %9s %13s\n' system events/s "p50 ms" "p99 ms" "peak RSS MB"
printf '%-30s %10s %9s %9s %13s\n' "Ripple" "$ripple_rate" "$ripple_p50" "$ripple_p99" "$(mb "$ripple_rss_kb")"
printf '%-30s %10s %9s %9s %13s\n' "Debezium JDBC sink (Connect)" "$jdbc_rate" "$jdbc_p50" "$jdbc_p99" "$(mb "$jdbc_rss_kb")"
printf '%-30s %10s %9s %9s %13s\n' "(source to Kafka, shared)" "" "$kafka_p50" "$kafka_p99" ""
printf 'Ripple/JDBC events/s: %.2fx\n' "$(echo "$ripple_rate / $jdbc_rate" | bc -l)"
echo "events/s: the topic's records over launch to the commit of the last write (Ripple $(printf '%.1f' "$ripple_secs") s, JDBC sink $(printf '%.1f' "$jdbc_secs") s)."
echo "latency: $lat_count changes offered at $lat_rate/s, one change per source transaction, both consumers live;"
echo "  applied-at (target trigger) minus written-at (source trigger), over $ripple_lat_rows / $jdbc_lat_rows rows."
echo "peak RSS: Ripple process; JDBC sink = whole Connect worker JVM (-Xmx1g; $(mb "$connect_rss_before_kb") MB before the run)."
echo "verified: Ripple $ripple_check, $ripple_verified; JDBC sink $jdbc_check."
if [ -n "$sinks_table" ]; then
  echo
  echo "$sinks_table"
fi
echo "(bench/compare.sh took $(( SECONDS - started_at )) s)"
