#!/usr/bin/env bash
# Tails a run's log on the TPU workers (default worker 0; --worker all for every one).
#
#   tpu/logs.sh --name sandmle-pod --zone us-central2-b --run reg1 [--worker all] [--lines 50] [--follow]
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

RUN=""
WORKER="0"
LINES=100
FOLLOW=0
while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        --run) RUN="$2"; shift 2 ;;
        --run=*) RUN="${1#*=}"; shift ;;
        --worker) WORKER="$2"; shift 2 ;;
        --worker=*) WORKER="${1#*=}"; shift ;;
        --lines) LINES="$2"; shift 2 ;;
        --lines=*) LINES="${1#*=}"; shift ;;
        --follow|-f) FOLLOW=1; shift ;;
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone
[ -n "$RUN" ] || die "--run RUN_NAME is required"
case "$LINES" in ''|*[!0-9]*) die "--lines must be a number" ;; esac

follow=""
[ "$FOLLOW" = 1 ] && follow="-f"
on_workers "$WORKER" "tail -n $LINES $follow ~/sandmle-logs/$RUN.log"
