# The timing loop bench/run.sh and bench/dcp.sh share (sourced, not run): `rounds NAME...`
# runs `run_one NAME` for every name once per round, REPS rounds, in a shuffled order, each
# after removing outputs ($dir/out.*), `sync` and a SETTLE-second pause; it appends
# "name microseconds peak-RSS-KiB" per run to $dir/times (the caller empties it first). Needs
# $dir, $reps, $settle and an exported run_one.
rounds() {
  for round in $(seq "$reps"); do
    for name in $(printf '%s\n' "$@" | shuf); do
      rm -rf "$dir"/out.*
      sync
      sleep "$settle"
      # Wall time from the clock in nanoseconds (time's %e has 10 ms steps); peak RSS from time.
      start=$(date +%s%N)
      /usr/bin/time -f "%M" -o "$dir/rss" bash -c "run_one $name" > /dev/null 2>&1
      end=$(date +%s%N)
      echo "$name $(( (end - start) / 1000 )) $(tail -1 "$dir/rss")" >> "$dir/times"
    done
    echo "round $round of $reps done" >&2
  done
}
