#!/usr/bin/env bash
# Deletes a TPU VM (sync its runs first: tpu/sync.sh).
#
#   tpu/delete.sh --name sandmle-pod --zone us-central2-b [--dry_run]
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone
gcloud_tpu delete "$NAME" --quiet
