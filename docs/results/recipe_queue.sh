#!/usr/bin/env bash
# Run the recipe search's jobs one at a time, each with the cores to itself: under the
# lock every heavy job shares (flock /tmp/tinylm-heavy.lock) and SCHED_FIFO (chrt -f 10,
# needs root or CAP_SYS_NICE), so that a test or an editor cannot take a core while a
# run's clock runs. The queue is re-read before each job, so lines can be added while it
# runs; finished lines are recorded in QUEUE.done and skipped.
#
#   bash docs/results/recipe_queue.sh QUEUE      # QUEUE lines: "SWEEP_FILE RUN_NAME"
#                                                #           or "! SHELL COMMAND"
# e.g. a QUEUE with the 30-minute finals' second seed:
#   configs/recipe_finals_30min.yaml recipe_seed-1
#   configs/recipe_finals_30min.yaml baseline_seed-1
#   ! python docs/results/recipe.py
set -uo pipefail
queue=${1:?usage: recipe_queue.sh QUEUE_FILE}
done_file="$queue.done"
tinylm=${TINYLM:-tinylm}
touch "$done_file"
while line=$(grep -v -x -F -f "$done_file" "$queue" | grep -v -e '^#' -e '^$' | head -1); [ -n "$line" ]; do
  echo "=== $(date +%T) $line"
  if [[ $line == !* ]]; then
    flock /tmp/tinylm-heavy.lock chrt -f 10 bash -c "${line#!}"
  else
    read -r file name <<< "$line"
    flock /tmp/tinylm-heavy.lock chrt -f 10 "$tinylm" sweep "$file" --only "$name"
  fi
  echo "=== $(date +%T) exit $? $line"
  echo "$line" >> "$done_file"
  sleep 5  # a window for other jobs waiting on the lock
done
