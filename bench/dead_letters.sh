#!/usr/bin/env bash
# Benchmark: dead letters at speed. For each sink, a table every event of which that sink refuses
# (the replica through a CHECK constraint, Redis through keys of another type, the index through a
# strict mapping), next to the same sink's normal rate on the same records:
#   normal     the sink alone, nothing refused
#   refusing   the sink alone, every event refused and dead-lettered
#   with two   the refusing sink and the other two sinks, which apply normally, in one run
# Dead letters are counted in the dead-letter topic itself, not from Ripple's own summary. The
# breaker is set out of the way (it would stop the storm at 1,000): this measures the path, not the
# policy. BENCH_CHANGES inserts (default 50,000) of the seed table, pre-filled through Debezium.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_CHANGES=${BENCH_CHANGES:-50000} BENCH_MIX=100,0,0
# shellcheck source=bench/prefill.sh
. bench/prefill.sh
dir=target/bench
replica=postgres://postgres@127.0.0.1:15433/replica
search=http://127.0.0.1:9251
rsql() { psql -X -q -v ON_ERROR_STOP=1 "$replica" "$@"; }

# sink_section NAME RUN: the sink's config, writing under names of its own for run RUN.
sink_section() {
  case $1 in
    replica) printf '[sinks.replica]\ntype = "postgres"\nurl = "%s"\nschema = "%s"\nmax_connections = 4\n' "$replica" "$2" ;;
    cache) printf '[sinks.cache]\ntype = "redis"\nurl = "redis://127.0.0.1:16379"\nkey = "%s:{pk}"\nformat = "hash"\n' "$2" ;;
    search) printf '[sinks.search]\ntype = "elasticsearch"\nurl = "%s"\nindex = "%s-{table}"\n' "$search" "$2" ;;
  esac
}

# refuse NAME RUN: makes the store refuse every event of the table for run RUN.
refuse() {
  case $1 in
    replica)
      rsql -c "CREATE SCHEMA \"$2\"; CREATE TABLE \"$2\".\"$id\" (LIKE \"${id}_ok_replica\".\"$id\" INCLUDING ALL);
               ALTER TABLE \"$2\".\"$id\" ADD CONSTRAINT refuse_everything CHECK (false) NOT VALID" ;;
    cache)
      psql -X -At "$url" -c "SELECT transaction_id FROM $id" \
        | awk -v p="$2" '{ printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nclash\r\n", length(p ":" $1), p ":" $1 }' \
        | redis-cli -p 16379 --pipe >/dev/null ;;
    search)
      curl -sf -X PUT "$search/$2-$id" -H 'Content-Type: application/json' \
        -d '{"mappings": {"dynamic": "strict", "properties": {"unrelated": {"type": "keyword"}}}}' >/dev/null ;;
  esac
}

# run RUN SINK... : ripple into SINKS (all with RUN's names), with a dead-letter topic of its own.
# Prints: events/s, dead letters in the topic, seconds, cpu seconds, peak RSS KB.
run() {
  local run=$1; shift
  local names
  names=$(printf '"%s", ' "$@")
  {
    printf '[kafka]\nbrokers = "127.0.0.1:19092"\ngroup_id = "%s"\ntopics = ["%s"]\n' "$run" "$topic"
    printf '[dead_letter]\ntopic = "%s-dlq"\nmax_rejections = 1000000000000\nmax_rejected_share = 1.0\n' "$run"
    for s in "$@"; do sink_section "$s" "$run"; done
    printf '[[routes]]\ntopics = ["%s"]\nsinks = [%s]\n' "$topic" "${names%, }"
  } > "$dir/$run.toml"
  /usr/bin/time -f "%e %U %S %M" -o "$dir/$run.time" \
    $ripple run --config "$dir/$run.toml" --exit-when-idle-ms 2000 >"$dir/$run.summary" 2>"$dir/$run.log"
  local summary rate busy dlq wall user sys rss
  summary=$(cat "$dir/$run.summary")
  rate=$(sed -n 's/.*, \([0-9]*\) events\/s$/\1/p' <<<"$summary")
  busy=$(sed -n 's/.*; \([0-9.]*\) s from first record.*/\1/p' <<<"$summary")
  dlq=$(scripts/stack topic-size "$run-dlq" 2>/dev/null || echo 0)
  read -r wall user sys rss < "$dir/$run.time"
  echo "$rate $dlq $busy $(echo "$user + $sys" | bc) $rss"
}

printf '\n%-8s %-10s %12s %14s %14s %9s %10s %10s\n' sink run events/s "dead letters" "letters/s" "cpu s" "cpu µs/ev" "peak RSS"
row() { # sink, label, figures
  local sink=$1 label=$2 rate dlq busy cpu rss per_s per_ev
  read -r rate dlq busy cpu rss <<<"$3"
  per_s=$(echo "$dlq / $busy" | bc)
  per_ev=$(echo "$cpu * 1000000 / $size" | bc)
  printf '%-8s %-10s %12s %14s %14s %9s %10s %8s MB\n' "$sink" "$label" "$rate" "$dlq" "$per_s" "$cpu" "$per_ev" "$((rss / 1024))"
}
others() { for s in replica cache search; do [ "$s" = "$1" ] || printf '%s ' "$s"; done; }

for sink in replica cache search; do
  row "$sink" normal "$(run "${id}_ok_$sink" "$sink")"
  refuse "$sink" "${id}_no_$sink"
  row "$sink" refusing "$(run "${id}_no_$sink" "$sink")"
  refuse "$sink" "${id}_mix_$sink"
  # shellcheck disable=SC2046
  row "$sink" "with two" "$(run "${id}_mix_$sink" "$sink" $(others "$sink"))"
done
echo "($size records of $BENCH_CHANGES inserts, $(nproc) cores, everything on one machine; 'with two': the"
echo " other two sinks applied every event in the same run, at the events/s shown)"

# Leave nothing behind.
for s in $(rsql -At -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE '${id}%'"); do
  rsql -c "DROP SCHEMA \"$s\" CASCADE" >/dev/null
done
curl -s -X DELETE "$search/${id}_*" >/dev/null || true
redis-cli -p 16379 --scan --pattern "${id}_*" | xargs -r -n 1000 redis-cli -p 16379 DEL >/dev/null
redis-cli -p 16379 --scan --pattern "ripple:keys:public.$id*" | xargs -r redis-cli -p 16379 DEL >/dev/null
scripts/stack delete-connector "${id//_/-}" >/dev/null
