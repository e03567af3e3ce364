#!/bin/bash
# every $2 s: ask each `loadgen api` process for malloc_stats() (printed to its own stderr = its log)
while true; do
  for pid in $(pgrep -f "loadgen api --listen"); do
    s=$(date +%s.%N)
    echo "=== $(date +%H:%M:%S) pid $pid" >> $1
    timeout 20 gdb -p $pid -batch -nx -ex 'call (void)malloc_stats()' -ex detach >/dev/null 2>&1
    echo "gdb took $(echo "$(date +%s.%N) - $s" | bc) s" >> $1
  done
  sleep $2
done
