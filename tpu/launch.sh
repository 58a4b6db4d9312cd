#!/usr/bin/env bash
# Launches one sandmle config on every worker at once (multi-host on), in the
# background, appending to ~/sandmle-logs/<run>.log on each worker.
#
#   tpu/launch.sh --name sandmle-pod --zone us-central2-b \
#       --config configs/regression.py --run reg1 \
#       --ckpt_dir gs://BUCKET/sandmle/reg1/checkpoints [--config.a.b=v ...] [--dry_run]
#
# The workdir is ~/sandmle-runs/<run> on each worker (process 0 writes config,
# metrics and TensorBoard there; sync.sh copies it to GCS). Checkpoints of a pod
# slice must go to storage every worker sees: --ckpt_dir gs://... (single host: optional).
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

CONFIG=""
RUN=""
CKPT_DIR=""
OVERRIDES=()
while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        --config) CONFIG="$2"; shift 2 ;;
        --config=*) CONFIG="${1#*=}"; shift ;;
        --config.*) OVERRIDES+=("$1"); shift ;;
        --run) RUN="$2"; shift 2 ;;
        --run=*) RUN="${1#*=}"; shift ;;
        --ckpt_dir) CKPT_DIR="$2"; shift 2 ;;
        --ckpt_dir=*) CKPT_DIR="${1#*=}"; shift ;;
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone
[ -n "$CONFIG" ] || die "--config configs/x.py[:arg] is required"
[ -n "$RUN" ] || die "--run RUN_NAME is required (names the workdir and the log)"
case "$RUN" in *[!A-Za-z0-9._-]*) die "--run may use letters, digits, . _ - only" ;; esac

args=(python -m sandmle.main "--config=$CONFIG" --multihost)
[ -n "$CKPT_DIR" ] && args+=("--config.checkpoint.directory=$CKPT_DIR")
args+=("${OVERRIDES[@]}")
cmdline=""
for a in "${args[@]}"; do
    cmdline+="$(shquote "$a") "
done
# ~ expands on the worker (the run name is checked to need no quoting).
# The log is appended to: a relaunch (which resumes the run) keeps the earlier output.
remote="cd ~/sandmle/src && . ~/sandmle/venv/bin/activate && mkdir -p ~/sandmle-logs ~/sandmle-runs/$RUN && nohup ${cmdline}--workdir ~/sandmle-runs/$RUN >> ~/sandmle-logs/$RUN.log 2>&1 < /dev/null &"
on_workers all "$remote"
