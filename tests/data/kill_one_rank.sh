#!/bin/bash
# A site launcher for the suite:
#   bash kill_one_rank.sh GLOB <the real launcher> python -m alcgap.md.task TASK
# It runs the real command and, on the first attempt of a task whose folder name matches GLOB,
# SIGKILLs one of its MPI ranks once the run has written its first checkpoint, as a lost node or
# an OOM kill does. Other tasks, and a later attempt (the resume's), run untouched.
glob="$1"
shift
task="${@: -1}"
folder=$(dirname "$task")
"$@" &
launcher=$!
# shellcheck disable=SC2254
case "$(basename "$folder")" in $glob) target=1 ;; *) target=0 ;; esac
if [ "$target" = 1 ] && [ ! -e "$folder/.rank-killed" ]; then
    while kill -0 "$launcher" 2>/dev/null; do
        if [ -e "$folder/checkpoint/latest.json" ]; then
            for pid in $(pgrep -f "alcgap.md.task $task"); do
                case "$(cat /proc/$pid/comm 2>/dev/null)" in
                    python*) echo "killing rank pid $pid of $task" >&2; touch "$folder/.rank-killed"; kill -9 "$pid"; break 2 ;;
                esac
            done
        fi
        sleep 0.05
    done
fi
wait "$launcher"
