#!/usr/bin/env bash
# Benchmark: Ripple next to Debezium's JDBC sink connector at its best documented settings, on the
# same Debezium topics, into identical pre-created tables of the same replica PostgreSQL cluster.
#
#   bench/compare.sh                                   # the full table (13 min at 100,000 changes on 2 cores)
#   BENCH_CHANGES=20000 BENCH_RUNS=1 BENCH_WARMUP=0 BENCH_CELLS=seed:json:4:off bench/compare.sh   # a trial
#
# Cells (BENCH_CELLS, space-separated workload:format:partitions:fsync). By default the headline
# cell, seed:json:4:on, its two shapes (1 and 4 partitions) with the replica's fsync on and off,
# and one factor varied at a time from 4 partitions, fsync on:
#   workload   seed (60/30/10 inserts/updates/deletes, ripple loadgen's seed mix), insert (100/0/0),
#              update (10/90/0, every update on the first BENCH_HOT_KEYS keys, default 1,000)
#   format     json (JsonConverter with schemas), noschema (schemas.enable=false: Ripple only, the
#              JDBC sink needs a schema), avro (Apicurio's AvroConverter, both read the registry)
#   partitions 1: Ripple with max_connections = 1, the JDBC sink with tasks.max = 1;
#              4: Ripple's defaults (max_connections = 4), tasks.max = 4
#   fsync      on: the replica at PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes
#              on; scripts/stack's PG_REPLICA_DURABLE=1); off: the stack's default, all three off
#
# Each workload is written once (BENCH_CHANGES changes, default 200,000, 100 per transaction) by
# ripple loadgen while one Debezium connector per format and partition count streams it, each into
# its own topic (decimal.handling.mode=precise, Debezium's default, so both sinks bind numerics as
# numerics; the schemaless topic keeps strings, as Ripple's schemaless decoder is configured).
#
# Runs: per cell, BENCH_WARMUP (1) discarded runs then BENCH_RUNS (3) measured, the order of the two
# systems alternated from run to run. Before each system: a fresh database with the target table
# created from the source's DDL (no triggers), then CHECKPOINT, so neither inherits the other's
# dirty buffers. events/s = the topic's records (tombstones included) over launch (process start
# / connector creation) to the replica's last commit (pg_last_committed_xact(), track_commit_timestamp
# is on) once the target holds exactly what the source holds (row count and a fingerprint over all
# columns; polled when the replica has been quiet for a second, and every 10 s).
# CPU s per 1M events, from /proc: Ripple's process (user+sys, /usr/bin/time), the Connect worker
# (utime+stime of its JVM, from creation to applied; it runs nothing else then), and the replica
# cluster (the postmaster, its live children and its reaped children: every backend, the WAL
# writer and checkpointer; the poller's own queries are in it too, for both systems alike).
# Peak RSS: Ripple's process; the whole Connect worker JVM (-Xms2g -Xmx2g, so about its heap).
#
# The JDBC sink's settings: insert.mode=upsert, delete.enabled, primary.key.mode=record_key,
# schema.evolution=none (the pre-created table), use.reduction.buffer=true, batch.size =
# consumer max.poll.records = BENCH_BATCH (10,000, Ripple's batch_size), fetch.min.bytes 1 MiB,
# max.partition.fetch.bytes 10 MiB, fetch.max.bytes 50 MiB, reWriteBatchedInserts=true in the JDBC
# URL; the worker restarted with G1 and a 2 GiB heap (restored to the stack's settings on exit).
# BENCH_JDBC_SETTINGS (a JSON object) is merged over them.
#
# Latency (BENCH_LATENCY_COUNT changes, default 30,000, offered at BENCH_LATENCY_RATE/s, default
# 1,000, one change per transaction, both consumers live on a 4-partition JSON topic, fsync as the
# last cell left it): each system's own share per row, the target trigger's write time minus the
# Kafka timestamp of the record that carried that row version; p50/p99 over the rows whose last
# change came from the load. The shared part, source write to Kafka timestamp, is shown on its own.
#
# BENCH_SINKS=0 skips bench/sinks.sh (Redis and the index next to raw store rates); BENCH_KEEP=1
# keeps the databases, tables and topics; BENCH_RIPPLE measures another ripple binary.
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$SECONDS
dir=target/bench
mkdir -p "$dir"
changes=${BENCH_CHANGES:-200000}
runs=${BENCH_RUNS:-3}
warmup=${BENCH_WARMUP:-1}
batch=${BENCH_BATCH:-10000}
hot_keys=${BENCH_HOT_KEYS:-1000}
cells=${BENCH_CELLS:-seed:json:1:on seed:json:4:on seed:json:1:off seed:json:4:off insert:json:4:on update:json:4:on seed:noschema:4:on seed:avro:4:on}
lat_count=${BENCH_LATENCY_COUNT:-30000}
lat_rate=${BENCH_LATENCY_RATE:-1000}
sinks_changes=${BENCH_SINKS_CHANGES:-$(( changes < 200000 ? changes : 200000 ))}
CONNECT=http://127.0.0.1:18083
REGISTRY=http://127.0.0.1:18081/apis/ccompat/v7
export PGOPTIONS='-c client_min_messages=warning'
src() { psql -h 127.0.0.1 -p 15432 -U postgres -XAtq -v ON_ERROR_STOP=1 -d app "$@"; }
rep() { local db=$1; shift; psql -h 127.0.0.1 -p 15433 -U postgres -XAtq -v ON_ERROR_STOP=1 -d "$db" "$@"; }
now() { date +%s.%N; }
fail() { echo "compare: $*" >&2; exit 1; }
tick=$(getconf CLK_TCK)

for cell in $cells; do
  IFS=: read -r w f p d <<<"$cell"
  [[ $w =~ ^(seed|insert|update)$ && $f =~ ^(json|noschema|avro)$ && $p =~ ^[1-9][0-9]*$ && $d =~ ^(on|off)$ ]] \
    || fail "BENCH_CELLS: '$cell' is not workload:format:partitions:fsync (seed|insert|update : json|noschema|avro : N : on|off)"
done

id="cmp_$(date +%s)"
if [[ -n ${BENCH_RIPPLE:-} ]]; then ripple=$BENCH_RIPPLE; else
  cargo build --release --bin ripple 2>&1 | tail -1; ripple=target/release/ripple; fi
url=postgres://postgres@127.0.0.1:15432/app

# ---------------------------------------------------------------------------------------------------
# the stack: the Connect worker at the JDBC sink's best settings; the replica as each cell asks

scripts/stack up >/dev/null
durable_now() { [ "$(rep postgres -c 'SHOW fsync')" = on ]; }
set_durable() { # on|off
  if [ "$1" = on ] && ! durable_now; then
    scripts/stack stop pg-replica >/dev/null && PG_REPLICA_DURABLE=1 scripts/stack start pg-replica >/dev/null
  elif [ "$1" = off ] && durable_now; then
    scripts/stack stop pg-replica >/dev/null && PG_REPLICA_DURABLE=0 scripts/stack start pg-replica >/dev/null
  fi
}
connect_jvm="-XX:+UseG1GC -Xms2g -Xmx2g -XX:+ExitOnOutOfMemoryError"
echo "== restarting Kafka Connect with $connect_jvm"
scripts/stack stop connect >/dev/null && CONNECT_JVM=$connect_jvm scripts/stack start connect >/dev/null
restore_connect=1
curl -sf "$CONNECT/connector-plugins" | grep -q 'io.debezium.connector.jdbc.JdbcSinkConnector' \
  || fail "Connect does not list io.debezium.connector.jdbc.JdbcSinkConnector"
jdbc_version=$(curl -s "$CONNECT/connector-plugins" | jq -r '.[] | select(.class == "io.debezium.connector.jdbc.JdbcSinkConnector") | .version')

# ---------------------------------------------------------------------------------------------------
# bookkeeping: everything this run creates is removed on exit, whatever happened

connectors=()   # Debezium source and JDBC sink connectors to delete on exit
tables=()       # source tables
ripple_pid=
sampler_pid=
cleanup() {
  set +e
  [ -n "$ripple_pid" ] && kill "$ripple_pid" 2>/dev/null && wait "$ripple_pid" 2>/dev/null
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
  local c
  for c in "${connectors[@]}"; do scripts/stack delete-connector "$c" >/dev/null 2>&1; done
  if [ "${BENCH_KEEP:-0}" != 1 ]; then
    for db in bench_jdbc bench_ripple; do rep postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; done
    for c in "${tables[@]}"; do src -c "DROP TABLE IF EXISTS public.$c" >/dev/null 2>&1; done
    src -c "DROP FUNCTION IF EXISTS public.bench_changed_at()" >/dev/null 2>&1
    scripts/stack reset-topics "^${id}_" "^${id}-" >/dev/null 2>&1
    local sid; sid=$(sed -n 's/^== pre-filling topic \([^.]*\)\..*/\1/p' "$dir/$id-sinks.out" 2>/dev/null)
    if [ -n "$sid" ]; then
      src -c "DROP TABLE IF EXISTS public.$sid" >/dev/null 2>&1
      scripts/stack reset-topics "^${sid}[.]" "$sid-cache" "$sid-search" >/dev/null 2>&1
    fi
  fi
  # Back to the stack's own settings, so the tests that follow see what they expect.
  set_durable off >/dev/null 2>&1
  [ -n "${restore_connect:-}" ] && { scripts/stack stop connect; scripts/stack start connect; } >/dev/null 2>&1
}
trap cleanup EXIT

# Debezium converter settings per format (the sink connector takes the same converters).
converters() {
  case $1 in
    json) echo '{"decimal.handling.mode": "precise"}' ;;
    noschema) echo '{"key.converter.schemas.enable": "false", "value.converter.schemas.enable": "false"}' ;;
    avro) jq '. + {"decimal.handling.mode": "precise"}' scripts/stack.d/avro-settings.json ;;
  esac
}
# The target's DDL: the source's table and key, without its triggers or replica identity.
target_ddl() { pg_dump -h 127.0.0.1 -p 15432 -U postgres -s -t "public.$1" --no-owner app | sed -e '/TRIGGER\|REPLICA IDENTITY\|^\\/d'; }
mix_of() { case $1 in seed) echo 60,30,10 ;; insert) echo 100,0,0 ;; update) echo 10,90,0 ;; esac; }

# ---------------------------------------------------------------------------------------------------
# 1. the topics: each workload written once, streamed by one connector per format and partition count

declare -A topic_of size_of rows_of
for w in $(for c in $cells; do echo "${c%%:*}"; done | sort -u); do
  table="${id}_$w"
  tables+=("$table")
  $ripple loadgen --url "$url" --table "$table" --drop --setup --count 0 >/dev/null
  target_ddl "$table" >"$dir/$table.ddl"
  variants=$(for c in $cells; do IFS=: read -r cw cf cp _ <<<"$c"; if [ "$cw" = "$w" ]; then echo "$cf$cp"; fi; done | sort -u)
  for v in $variants; do
    f=${v%%[0-9]*}; p=${v#"$f"}
    name="${id}-$w-$v"
    connectors+=("$name")
    DEBEZIUM_SETTINGS=$(converters "$f") scripts/stack debezium "$name" "${id}_${w}_$v" "public.$table" initial "$p" >/dev/null
    topic_of[$w:$f:$p]="${id}_${w}_$v.public.$table"
  done
  echo "== $w: $changes changes (mix $(mix_of "$w")) into $table, streamed to $(echo "$variants" | wc -w) topics"
  hot=(); [ "$w" = update ] && hot=(--hot-keys "$hot_keys")
  RIPPLE_LOG=warn $ripple loadgen --url "$url" --table "$table" --count "$changes" --seed 1 --mix "$(mix_of "$w")" "${hot[@]}" | sed 's/^/   /'
  rows_of[$w]=$(src -c "SELECT count(*) FROM public.$table")
  # Each change once, plus a tombstone after each delete; wait until every topic is still.
  for v in $variants; do
    f=${v%%[0-9]*}; p=${v#"$f"}; t=${topic_of[$w:$f:$p]}
    last=-1; stable=0
    while :; do
      size=$(scripts/stack topic-size "$t")
      if (( size >= changes )) && (( size == last )); then stable=$((stable + 1)); else stable=0; fi
      (( stable >= 3 )) && break
      last=$size; sleep 1
    done
    size_of[$w:$f:$p]=$size
    echo "   $t: $size records"
  done
  # Only the consumers run from here on.
  for v in $variants; do scripts/stack delete-connector "${id}-$w-$v" >/dev/null; done
done

# ---------------------------------------------------------------------------------------------------
# measuring

# CPU ticks of the replica cluster: the postmaster, its reaped children and its live children.
pg_ticks() {
  local pm t c; pm=$(head -n 1 .stack/pg-replica/data/postmaster.pid)
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for c in $(pgrep -P "$pm"); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0) )); done
  echo "$t"
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
secs() { echo "$1 / $tick" | bc -l; }

fresh_target() { # database, table
  rep postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  rep postgres -c "CREATE DATABASE $1" >/dev/null
  rep "$1" -f "$dir/$2.ddl" >/dev/null
  rep "$1" -c "VACUUM" -c "CHECKPOINT" >/dev/null
}

# Row text cast to one type per column in every database; a fingerprint for polling, an md5 at the end.
# trim_scale: Debezium's VariableScaleDecimal (decimal.handling.mode=precise, an unconstrained
# numeric) drops trailing zeros, 349.20 -> 349.2, for both sinks alike.
row_text="row(transaction_id::text, user_id::text, \"timestamp\"::timestamp, trim_scale(amount::numeric), currency::text,
  city::text, country::text, merchant_name::text, payment_method::text, ip_address::text, voucher_code::text,
  affiliate_id::text, modified_by::text, modified_at::timestamp, change_info::jsonb)::text"
fingerprint_sql() { echo "SELECT count(*) || ' ' || coalesce(sum(hashtext($row_text)::bigint), 0) FROM public.$1"; }
checksum_sql() { echo "SELECT count(*) || ' ' || coalesce(md5(string_agg($row_text, ',' ORDER BY transaction_id)), '-') FROM public.$1"; }
verdict() { if [ "$(rep "$1" -c "$(checksum_sql "$2")")" = "$src_sum" ]; then echo equal; else echo DIFFERENT; fi; } # database, table

# Waits until DATABASE's TABLE holds what the source holds; ALIVE is a command that fails once the
# consumer died. Prints the replica's last commit time then. The exact comparison (a scan) runs
# when no transaction committed since the last poll, every 10 s, and once the consumer is gone.
wait_applied() { # database, table, want, alive
  local db=$1 table=$2 want=$3 alive=$4 last= cur polls=0 moved=$SECONDS up
  while :; do
    cur=$(rep "$db" -c "SELECT (pg_last_committed_xact()).xid")
    up=1; eval "$alive" || up=0
    if [ "$cur" = "$last" ] || (( polls % 10 == 9 )) || (( ! up )); then
      if [ "$(rep "$db" -c "$(fingerprint_sql "$table")")" = "$want" ]; then
        rep "$db" -c "SELECT extract(epoch FROM (pg_last_committed_xact()).timestamp)"; return
      fi
    fi
    (( up )) || fail "$db: the consumer stopped and $table differs from the source"
    [ "$cur" != "$last" ] && moved=$SECONDS
    (( SECONDS - moved < 300 )) || fail "$db: nothing committed for 300 s and $table differs from the source"
    last=$cur; polls=$((polls + 1))
    sleep 1
  done
}

ripple_config() { # file, group, topic, database, format, partitions
  local conns=""; [ "$6" = 1 ] && conns="max_connections = 1"
  local decode=""
  case $5 in
    avro) decode=$'[decode.avro]\n'"registry_url = \"$REGISTRY\"" ;;
    noschema) decode=$'[decode.schemaless]\ntypes_from = "source"\ndecimal_handling_mode = "string"' ;;
  esac
  cat >"$1" <<TOML
[kafka]
brokers = "127.0.0.1:19092"
group_id = "$2"
topics = ["$3"]
[source]
url = "$url"
[pipeline]
batch_size = $batch
$decode
[sinks.replica]
type = "postgres"
url = "postgres://postgres@127.0.0.1:15433/$4"
$conns
[[routes]]
topics = ["$3"]
sinks = ["replica"]
TOML
}

# Creates a JDBC sink connector NAME from TOPIC into DATABASE's TABLE with TASKS tasks.
create_sink() { # name, topic, database, table, tasks, format
  local name=$1
  jq -n --argjson conv "$(converters "$6" | jq 'with_entries(select(.key | test("converter")))')" \
    --argjson extra "${BENCH_JDBC_SETTINGS:-{\}}" --arg topic "$2" --arg db "$3" --arg table "$4" \
    --arg tasks "$5" --arg batch "$batch" '{
    "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
    "tasks.max": $tasks,
    "topics": $topic,
    "connection.url": ("jdbc:postgresql://127.0.0.1:15433/" + $db + "?reWriteBatchedInserts=true"),
    "connection.username": "postgres",
    "connection.password": "postgres",
    "insert.mode": "upsert",
    "delete.enabled": "true",
    "primary.key.mode": "record_key",
    "schema.evolution": "none",
    "use.reduction.buffer": "true",
    "collection.name.format": $table,
    "batch.size": $batch,
    "consumer.override.max.poll.records": $batch,
    "consumer.override.fetch.min.bytes": "1048576",
    "consumer.override.max.partition.fetch.bytes": "10485760",
    "consumer.override.fetch.max.bytes": "52428800"
  } + $conv + $extra' >"$dir/$name.json"
  local code
  code=$(curl -s -o "$dir/$name.put" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
    --data @"$dir/$name.json" "$CONNECT/connectors/$name/config")
  [[ $code == 20? ]] || fail "creating sink connector $name failed ($code): $(head -c 500 "$dir/$name.put")"
  connectors+=("$name")
}
sink_ok() { ! curl -s "$CONNECT/connectors/$1/status" | grep -q '"state":"FAILED"'; }
check_sink() {
  local status; status=$(curl -s "$CONNECT/connectors/$1/status")
  if echo "$status" | grep -q '"state":"FAILED"'; then
    echo "$status" | jq -r '.. | .trace? // empty' | grep '^Caused by' | tail -n 3 | cut -c 1-400 >&2
    fail "JDBC sink connector $1 failed (see above and scripts/stack logs connect)"
  fi
}

results=$dir/$id.results   # cell system run events/s own-cpu-s replica-cpu-s rss-kb verdict records
: >"$results"

run_ripple() { # cell topic table run
  local cell=$1 topic=$2 table=$3 n=$4 f p t0 t1 pg0 pg1 tag="$id-r$4-${1//:/-}"
  IFS=: read -r _ f p _ <<<"$cell"
  fresh_target bench_ripple "$table"
  ripple_config "$dir/$tag.toml" "$tag" "$topic" bench_ripple "$f" "$p"
  pg0=$(pg_ticks); t0=$(now)
  /usr/bin/time -f '%U %S %M' -o "$dir/$tag.time" $ripple run --config "$dir/$tag.toml" --exit-when-idle-ms 2000 \
    >"$dir/$tag.summary" 2>"$dir/$tag.log" &
  ripple_pid=$!
  t1=$(wait_applied bench_ripple "$table" "$want" 'kill -0 "$ripple_pid" 2>/dev/null') \
    || { tail -n 20 "$dir/$tag.log" >&2; fail "ripple run ended before applying the whole topic"; }
  pg1=$(pg_ticks)
  wait "$ripple_pid" || { tail -n 20 "$dir/$tag.log" >&2; fail "ripple run failed"; }
  ripple_pid=
  local user sys rss; read -r user sys rss <"$dir/$tag.time"
  printf '%s\tripple\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cell" "$n" "$(echo "$size / ($t1 - $t0)" | bc -l)" \
    "$(echo "$user + $sys" | bc -l)" "$(secs $((pg1 - pg0)))" "$rss" "$(verdict bench_ripple "$table")" "$size" >>"$results"
}

run_jdbc() { # cell topic table run
  local cell=$1 topic=$2 table=$3 n=$4 f p t0 t1 pg0 pg1 c0 c1 name="$id-j$4-${1//:/-}"
  IFS=: read -r _ f p _ <<<"$cell"
  name=${name//_/-}
  fresh_target bench_jdbc "$table"
  local connect_pid; connect_pid=$(cat .stack/run/connect.pid)
  echo 0 >"$dir/$name.rss"
  ( peak=0
    while :; do
      r=$(ps -o rss= -p "$connect_pid" | tr -d ' ') || break
      (( r > peak )) && { peak=$r; echo "$peak" >"$dir/$name.rss"; }
      sleep 0.5
    done ) &
  sampler_pid=$!
  pg0=$(pg_ticks); c0=$(proc_ticks "$connect_pid"); t0=$(now)
  create_sink "$name" "$topic" bench_jdbc "$table" "$p" "$f"
  t1=$(wait_applied bench_jdbc "$table" "$want" 'sink_ok "$name"') || { check_sink "$name"; fail "the JDBC sink did not apply the whole topic"; }
  pg1=$(pg_ticks); c1=$(proc_ticks "$connect_pid")
  kill "$sampler_pid"; sampler_pid=
  scripts/stack delete-connector "$name" >/dev/null
  printf '%s\tjdbc\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cell" "$n" "$(echo "$size / ($t1 - $t0)" | bc -l)" \
    "$(secs $((c1 - c0)))" "$(secs $((pg1 - pg0)))" "$(cat "$dir/$name.rss")" "$(verdict bench_jdbc "$table")" "$size" >>"$results"
}

# ---------------------------------------------------------------------------------------------------
# 2. throughput: every cell, fsync-on cells first (one replica restart each way)

ordered=$(for c in $cells; do echo "$c"; done | awk -F: '{print ($4 == "on" ? 0 : 1) "\t" $0}' | sort -s -k1,1 | cut -f2)
for cell in $ordered; do
  IFS=: read -r w f p d <<<"$cell"
  set_durable "$d"
  topic=${topic_of[$w:$f:$p]}; size=${size_of[$w:$f:$p]}; table="${id}_$w"
  want=$(src -c "$(fingerprint_sql "$table")"); src_sum=$(src -c "$(checksum_sql "$table")")
  echo "== $cell: $size records of $topic"
  for (( n = 0; n < warmup + runs; n++ )); do
    if (( n % 2 == 0 )); then order="ripple jdbc"; else order="jdbc ripple"; fi
    [ "$f" = noschema ] && order=ripple   # the JDBC sink needs records with schemas
    for system in $order; do "run_$system" "$cell" "$topic" "$table" "$n"; done
    label=$( (( n < warmup )) && echo "warm-up, discarded" || echo "run $(( n - warmup + 1 ))")
    awk -F'\t' -v c="$cell" -v n="$n" -v l="$label" '$1 == c && $3 == n {
      printf "   %-18s %-7s %8.0f events/s  %6.2f s own CPU  %6.2f s replica CPU  %s\n", l, $2, $4, $5, $6, $8 }' "$results"
  done
done

# ---------------------------------------------------------------------------------------------------
# 3. latency: each system's own share per row, both live

lid="${id}_lat"
ltopic="${lid}.public.$lid"
tables+=("$lid")
echo "== latency: $lat_count changes at $lat_rate/s into $lid, both consumers live (fsync $(durable_now && echo on || echo off))"
$ripple loadgen --url "$url" --table "$lid" --drop --setup --count 0 >/dev/null
src >/dev/null <<SQL
ALTER TABLE public.$lid ADD COLUMN _changed_at timestamptz;
CREATE OR REPLACE FUNCTION public.bench_changed_at() RETURNS trigger AS \$\$
BEGIN NEW._changed_at := clock_timestamp(); RETURN NEW; END \$\$ LANGUAGE plpgsql;
CREATE TRIGGER zz_bench_changed_at BEFORE INSERT OR UPDATE ON public.$lid FOR EACH ROW EXECUTE FUNCTION public.bench_changed_at();
SQL
target_ddl "$lid" >"$dir/$lid.ddl"
cat >>"$dir/$lid.ddl" <<SQL
ALTER TABLE public.$lid ADD COLUMN _applied_at timestamptz;
CREATE FUNCTION public.bench_applied_at() RETURNS trigger AS \$\$
BEGIN NEW._applied_at := clock_timestamp(); RETURN NEW; END \$\$ LANGUAGE plpgsql;
CREATE TRIGGER zz_bench_applied_at BEFORE INSERT OR UPDATE ON public.$lid FOR EACH ROW EXECUTE FUNCTION public.bench_applied_at();
SQL
for db in bench_jdbc bench_ripple; do fresh_target "$db" "$lid"; done
connectors+=("${lid//_/-}")
DEBEZIUM_SETTINGS=$(converters json) scripts/stack debezium "${lid//_/-}" "$lid" "public.$lid" initial 4 >/dev/null
# A warm-up, so that both consumers are assigned and running before the measured load.
RIPPLE_LOG=warn $ripple loadgen --url "$url" --table "$lid" --count 200 --seed 2 >/dev/null
start=$SECONDS
until (( $(scripts/stack topic-size "$ltopic") >= 200 )); do
  (( SECONDS - start < 60 )) || fail "the warm-up's records did not reach $ltopic"
  sleep 0.5
done
jname="${lid//_/-}-jdbc"
create_sink "$jname" "$ltopic" bench_jdbc "$lid" 4 json
ripple_config "$dir/$lid-ripple.toml" "$lid-ripple" "$ltopic" bench_ripple json 4
$ripple run --config "$dir/$lid-ripple.toml" >"$dir/$lid-ripple.summary" 2>"$dir/$lid-ripple.log" &
ripple_pid=$!
fence_sql() { echo "SELECT count(*) || ' ' || coalesce(md5(string_agg(transaction_id::text || '@' || extract(epoch FROM _changed_at), ',' ORDER BY transaction_id)), '-') FROM public.$lid"; }
caught_up() { # timeout seconds
  local want start=$SECONDS ok db
  want=$(src -c "$(fence_sql)")
  while :; do
    ok=1
    for db in bench_jdbc bench_ripple; do [ "$(rep "$db" -c "$(fence_sql)")" = "$want" ] || ok=0; done
    (( ok )) && return 0
    kill -0 "$ripple_pid" 2>/dev/null || { tail -n 20 "$dir/$lid-ripple.log" >&2; fail "ripple run exited"; }
    check_sink "$jname"
    (( SECONDS - start < $1 )) || { echo "compare: not caught up after $1 s" >&2; return 1; }
    sleep 0.5
  done
}
caught_up 180 || fail "the warm-up did not reach both targets"
load_start=$(src -c "SELECT extract(epoch FROM clock_timestamp())")
RIPPLE_LOG=warn $ripple loadgen --url "$url" --table "$lid" --count "$lat_count" --rate "$lat_rate" --batch 1 --seed 3 | sed 's/^/   /'
caught_up 600 || fail "the fixed-rate load did not reach both targets"
kill "$ripple_pid"; wait "$ripple_pid" 2>/dev/null || true; ripple_pid=
# Every row version the load wrote, keyed by (key, _changed_at), with the Kafka timestamp of its record.
kcat -b 127.0.0.1:19092 -C -t "$ltopic" -o beginning -e -q -f '%T\t%s\n' >"$dir/$lid.records"
for db in bench_ripple bench_jdbc; do
  rep "$db" -F $'\t' -c "SELECT transaction_id, (extract(epoch FROM _changed_at) * 1000000)::bigint,
      extract(epoch FROM _applied_at) * 1000 FROM public.$lid
    WHERE _changed_at >= to_timestamp($load_start)" >"$dir/$lid.$db"
done
read -r ripple_p50 ripple_p99 ripple_lat_rows jdbc_p50 jdbc_p99 jdbc_lat_rows kafka_p50 kafka_p99 kafka_n < <(python3 - "$dir/$lid" "$load_start" <<'PY'
import datetime, json, sys
base, start = sys.argv[1], float(sys.argv[2])
sent = {}     # (key, changed-at micros) -> Kafka timestamp ms
shared = []   # Kafka timestamp - source write, ms
for line in open(base + ".records"):
    ts, _, value = line.rstrip("\n").partition("\t")
    if not value or value == "null":
        continue
    after = (json.loads(value).get("payload") or {}).get("after") or {}
    if after.get("_changed_at") is None:
        continue
    changed = datetime.datetime.fromisoformat(after["_changed_at"].replace("Z", "+00:00"))
    micros = round(changed.timestamp() * 1_000_000)
    sent[(after["transaction_id"], micros)] = int(ts)
    if changed.timestamp() >= start:
        shared.append(int(ts) - micros / 1000)
def pct(ms, p):  # as percentile_cont
    ms = sorted(ms)
    if not ms:
        return "-"
    k = (len(ms) - 1) * p
    f = int(k)
    return "%.1f" % (ms[f] + (ms[min(f + 1, len(ms) - 1)] - ms[f]) * (k - f))
out = []
for db in ("bench_ripple", "bench_jdbc"):
    own = []
    for line in open(base + "." + db):
        key, micros, applied = line.rstrip("\n").split("\t")
        ts = sent.get((key, int(micros)))
        if ts is not None:
            own.append(float(applied) - ts)
    out += [pct(own, 0.5), pct(own, 0.99), str(len(own))]
out += [pct(shared, 0.5), pct(shared, 0.99), str(len(shared))]
print(" ".join(out))
PY
)

# ---------------------------------------------------------------------------------------------------
# 4. Redis and the search index next to raw store rates

sinks_table=
if [ "${BENCH_SINKS:-1}" != 0 ]; then
  echo "== bench/sinks.sh with $sinks_changes changes"
  if BENCH_CHANGES=$sinks_changes bench/sinks.sh >"$dir/$id-sinks.out" 2>&1; then
    sinks_table=$(sed -n '/^store /,/^(/p' "$dir/$id-sinks.out")
  else
    sinks_table="bench/sinks.sh FAILED ($dir/$id-sinks.out): $(tail -n 1 "$dir/$id-sinks.out")"
  fi
fi

# ---------------------------------------------------------------------------------------------------
# the table

echo
echo "Ripple vs Debezium JDBC sink $jdbc_version, $changes changes per workload through Debezium, $(nproc) cores,"
echo "$runs measured runs per system and cell after $warmup discarded (order alternated): median [min-max]"
python3 - "$results" "$warmup" <<'PY'
import statistics, sys
path, warmup = sys.argv[1], int(sys.argv[2])
rows, order = {}, []
for line in open(path):
    cell, system, run, rate, own, rep, rss, verdict, records = line.rstrip("\n").split("\t")
    if int(run) < warmup:
        continue
    if cell not in rows:
        rows[cell] = {}
        order.append(cell)
    per_m = 1e6 / int(records)
    rows[cell].setdefault(system, []).append(
        (float(rate), float(own) * per_m, float(rep) * per_m, int(rss), verdict))
def spread(xs, fmt):
    return (fmt + " [" + fmt + "-" + fmt + "]") % (statistics.median(xs), min(xs), max(xs))
print("%-5s %-8s %-8s %-5s %-6s %-22s %-19s %-19s %6s  %s" % ("parts", "workload", "format", "fsync", "system",
      "events/s", "own CPU s/1M", "replica CPU s/1M", "RSS MB", "target vs source"))
for cell in order:
    w, f, p, d = cell.split(":")
    for system in ("ripple", "jdbc"):
        rs = rows[cell].get(system)
        if not rs:
            print("%-5s %-8s %-8s %-5s %-6s %s" % (p, w, f, d, "JDBC", "n/a: the JDBC sink needs records with schemas"))
            continue
        print("%-5s %-8s %-8s %-5s %-6s %-22s %-19s %-19s %6.0f  %s" % (
            p, w, f, d, "Ripple" if system == "ripple" else "JDBC",
            spread([r[0] for r in rs], "%.0f"), spread([r[1] for r in rs], "%.1f"),
            spread([r[2] for r in rs], "%.1f"), max(r[3] for r in rs) / 1024,
            ",".join(sorted(set(r[4] for r in rs)))))
    if "jdbc" in rows[cell]:
        r = statistics.median(x[0] for x in rows[cell]["ripple"]) / statistics.median(x[0] for x in rows[cell]["jdbc"])
        c = statistics.median(x[1] + x[2] for x in rows[cell]["ripple"]) / statistics.median(x[1] + x[2] for x in rows[cell]["jdbc"])
        print("%-35s Ripple/JDBC: %.1fx events/s, %.2fx the CPU per event (own + replica)" % ("", r, c))
PY
echo "events/s: the topic's records over launch to the replica's last commit; CPU: user+sys from /proc over the"
echo "  same span (own = Ripple's process or the whole Connect worker JVM; replica = every process of its cluster)."
echo "RSS: peak of Ripple's process; of the Connect worker JVM (G1, -Xms2g -Xmx2g)."
echo
echo "latency, $lat_count changes offered at $lat_rate/s, one change per transaction, 4 partitions, both live:"
printf '  %-34s p50 %7s ms   p99 %7s ms   over %s rows\n' "Ripple's own share" "$ripple_p50" "$ripple_p99" "$ripple_lat_rows"
printf '  %-34s p50 %7s ms   p99 %7s ms   over %s rows\n' "JDBC sink's own share" "$jdbc_p50" "$jdbc_p99" "$jdbc_lat_rows"
printf '  %-34s p50 %7s ms   p99 %7s ms   over %s records\n' "source to Kafka (shared)" "$kafka_p50" "$kafka_p99" "$kafka_n"
echo "  own share = the target trigger's write time minus the Kafka timestamp of the record of that row version."
if [ -n "$sinks_table" ]; then
  echo
  echo "$sinks_table"
fi
echo "(bench/compare.sh took $(( SECONDS - started_at )) s)"
