#!/bin/bash
# Default `fastadapter bench` wall time, old tree (25c0ef7) and new (3a78013) by turns, in the fresh clone /tmp/x.
cd /tmp/x
for round in 1 2; do
  for rev in 25c0ef7 3a78013; do
    git checkout -q $rev
    out=/tmp/p2/abab/$round-$rev; mkdir -p $out
    start=$(date +%s.%N)
    .venv/bin/fastadapter bench --out $out > $out/bench.md 2> $out/bench.err
    rc=$?
    echo "round $round $rev rc=$rc wall=$(echo "$(date +%s.%N) - $start" | bc) at $(date -u +%H:%M:%S)" >> /tmp/p2/abab/times.txt
  done
done
