#!/usr/bin/env bash
# Copies a run's workdir (config, metrics.jsonl, TensorBoard) from worker 0 to GCS,
# and optionally from GCS to this machine.
#
#   tpu/sync.sh --name sandmle-pod --zone us-central2-b --run reg1 --dest gs://BUCKET/sandmle/reg1
#   tpu/sync.sh ... --local ./runs/reg1     # also pull it here (then sandmle-inspect ./runs/reg1)
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

RUN=""
DEST=""
LOCAL=""
while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        --run) RUN="$2"; shift 2 ;;
        --run=*) RUN="${1#*=}"; shift ;;
        --dest) DEST="$2"; shift 2 ;;
        --dest=*) DEST="${1#*=}"; shift ;;
        --local) LOCAL="$2"; shift 2 ;;
        --local=*) LOCAL="${1#*=}"; shift ;;
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone
[ -n "$RUN" ] || die "--run RUN_NAME is required"
case "$DEST" in gs://*) ;; *) die "--dest must be a gs:// URL" ;; esac

# Only process 0 writes the workdir, so worker 0 holds all of it.
on_workers 0 "gcloud storage rsync --recursive ~/sandmle-runs/$RUN $(shquote "$DEST")"
if [ -n "$LOCAL" ]; then
    run mkdir -p "$LOCAL"
    run gcloud storage rsync --recursive "$DEST" "$LOCAL"
fi
