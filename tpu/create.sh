#!/usr/bin/env bash
# Creates a TPU VM: one host (e.g. v5litepod-8, v4-8) or a pod slice (e.g. v4-32,
# v5litepod-32: several hosts, one sandmle process each).
#
#   tpu/create.sh --name sandmle-v4 --zone us-central2-b --type v4-8 [--spot] [--dry_run]
#   tpu/create.sh --name sandmle-pod --zone us-central2-b --type v4-32 --version tpu-ubuntu2204-base
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

TYPE=""
VERSION="tpu-ubuntu2204-base"
SPOT=0
while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        --type) TYPE="$2"; shift 2 ;;
        --type=*) TYPE="${1#*=}"; shift ;;
        --version) VERSION="$2"; shift 2 ;;
        --version=*) VERSION="${1#*=}"; shift ;;
        --spot) SPOT=1; shift ;;
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone
[ -n "$TYPE" ] || die "--type ACCELERATOR_TYPE is required (e.g. v4-8 one host, v4-32 a pod slice)"

args=(create "$NAME" --accelerator-type="$TYPE" --version="$VERSION")
[ "$SPOT" = 1 ] && args+=(--spot)
gcloud_tpu "${args[@]}"
# A pod slice has several workers; list them so the user sees what launch.sh reaches.
gcloud_tpu describe "$NAME" --format='value(networkEndpoints[].ipAddress)'
