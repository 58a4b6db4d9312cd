#!/usr/bin/env bash
# Installs sandmle on every worker of a TPU VM: copies this checkout (or clones
# --git URL) to ~/sandmle/src, makes ~/sandmle/venv and installs the package with its
# TPU extra.
#
#   tpu/setup.sh --name sandmle-pod --zone us-central2-b [--dry_run]
#   tpu/setup.sh --name sandmle-pod --zone us-central2-b --git https://github.com/ORG/sandmle.git --ref main
#
# Everything goes in ~/sandmle, marked as setup.sh's own by ~/sandmle/.sandmle-tpu; a
# rerun replaces ~/sandmle/src there and deletes nothing else. A ~/sandmle that
# setup.sh did not make is left alone (the worker reports it and the setup stops).
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
        *) die "unknown flag $1" ;;
    esac
done
require_name_zone

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# These strings run on the workers, so $D must expand there, not here.
# shellcheck disable=SC2016
# The only folder setup.sh writes in or deletes from on a worker (see the header).
guard='D=~/sandmle; if [ -e "$D" ] && [ ! -f "$D/.sandmle-tpu" ]; then echo "setup.sh: $D exists and was not made by tpu/setup.sh; move it away first" >&2; exit 2; fi; mkdir -p "$D" && touch "$D/.sandmle-tpu" && rm -rf "$D/src.new"'
if [ -n "$GIT_URL" ]; then
    fetch="git clone --depth 1 --branch $(shquote "$REF") $(shquote "$GIT_URL") \"\$D/src.new\""
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
    # shellcheck disable=SC2016
    fetch='mkdir "$D/src.new" && tar -xzf /tmp/sandmle-src.tar.gz -C "$D/src.new"'
fi
# shellcheck disable=SC2016
swap='rm -rf "$D/src.old" && { [ ! -d "$D/src" ] || mv "$D/src" "$D/src.old"; } && mv "$D/src.new" "$D/src" && rm -rf "$D/src.old"'
install="python3 -m venv \"\$D/venv\" && . \"\$D/venv/bin/activate\" && pip install -q --upgrade pip && pip install -q -e \"\$D/src[tpu]\" && python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
on_workers all "set -e; $guard && $fetch && $swap && $install"
