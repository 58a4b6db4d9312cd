#!/usr/bin/env bash
# Deletes a TPU VM, after asking (sync its runs first: tpu/sync.sh).
#
#   tpu/delete.sh --name sandmle-pod --zone us-central2-b [--yes] [--dry_run]
#
# Without --yes it asks on the terminal, and refuses when there is none to ask on.
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone
confirm "delete TPU VM $NAME in $ZONE with its disks (runs not synced to GCS are lost)"
gcloud_tpu delete "$NAME" --quiet
