#!/usr/bin/env bash
# Installs sandmle on every worker of a TPU VM: copies this checkout (or clones
# --git URL), makes ~/sandmle-venv and installs the package with its TPU extra.
#
#   tpu/setup.sh --name sandmle-pod --zone us-central2-b [--dry_run]
#   tpu/setup.sh --name sandmle-pod --zone us-central2-b --git https://github.com/ORG/sandmle.git --ref main
set -euo pipefail
# shellcheck source=tpu/lib.sh
. "$(dirname "$0")/lib.sh"

GIT_URL=""
REF="main"
while [ $# -gt 0 ]; do
    common_flag "$1" "${2-}" && shift "$SHIFT" && continue
    case "$1" in
        --git) GIT_URL="$2"; shift 2 ;;
        --git=*) GIT_URL="${1#*=}"; shift ;;
        --ref) REF="$2"; shift 2 ;;
        --ref=*) REF="${1#*=}"; shift ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "$GIT_URL" ]; then
    fetch="rm -rf ~/sandmle && git clone --depth 1 --branch $(shquote "$REF") $(shquote "$GIT_URL") ~/sandmle"
else
    # Ship the working tree (tracked and untracked, not ignored files) to every worker.
    TARBALL="/tmp/sandmle-src-$NAME.tar.gz"
    if [ "$DRY_RUN" = 1 ]; then
        echo "(cd $(shquote "$ROOT") && git ls-files -z --cached --others --exclude-standard | tar -czf $TARBALL --null -T -)"
    else
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
            tar -czf "$TARBALL" --null -T -)
    fi
    gcloud_tpu scp "$TARBALL" "$NAME":/tmp/sandmle-src.tar.gz --worker=all
    fetch="rm -rf ~/sandmle && mkdir -p ~/sandmle && tar -xzf /tmp/sandmle-src.tar.gz -C ~/sandmle"
fi
install="python3 -m venv ~/sandmle-venv && . ~/sandmle-venv/bin/activate && pip install -q --upgrade pip && pip install -q -e ~/sandmle'[tpu]' && python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
on_workers all "set -e; $fetch && $install"
