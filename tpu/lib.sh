#!/usr/bin/env bash
# shellcheck disable=SC2034  # the variables set here are read by the sourcing script
# Shared helpers for the tpu/ scripts: flag parsing, dry runs, gcloud wrappers.
# Sourced, not run. Every gcloud call goes through `run` so --dry_run prints the
# exact command lines (shell-quoted, one per line) instead of running them.

DRY_RUN=0
YES=0
NAME=""
ZONE=""
PROJECT=""

die() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

# Prints the calling script's usage: its header comment, without the '#'s.
usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# Asks before a destructive step; --yes answers for the user and --dry_run only prints.
# Without a terminal to ask on, it refuses rather than guess.
confirm() {
    [ "$DRY_RUN" = 1 ] && return 0
    [ "$YES" = 1 ] && return 0
    if [ ! -t 0 ]; then
        die "$1: refusing without --yes (no terminal to ask on)"
    fi
    local answer
    read -r -p "$1? [y/N] " answer
    case "$answer" in
        y | Y | yes | YES) return 0 ;;
        *) die "not confirmed; nothing done" ;;
    esac
}

# Quotes one word for a POSIX shell, in single quotes only where needed, so dry-run
# output reads well and pastes as is.
shquote() {
    case "$1" in
        '' | *[!A-Za-z0-9_./:=@%+,-]*)
            local q="'\\''"
            printf "'%s'" "${1//\'/$q}" ;;
        *) printf '%s' "$1" ;;
    esac
}

# Prints a command shell-quoted; runs it unless this is a dry run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        local out="" arg
        for arg in "$@"; do
            out+="$(shquote "$arg") "
        done
        echo "${out% }"
    else
        "$@"
    fi
}

# Handles the flags every script takes; returns 1 for a flag it does not know.
# Usage inside a parse loop: common_flag "$1" "${2-}" && shift $SHIFT && continue
common_flag() {
    SHIFT=2
    case "$1" in
        --name) NAME="$2" ;;
        --name=*) NAME="${1#*=}"; SHIFT=1 ;;
        --zone) ZONE="$2" ;;
        --zone=*) ZONE="${1#*=}"; SHIFT=1 ;;
        --project) PROJECT="$2" ;;
        --project=*) PROJECT="${1#*=}"; SHIFT=1 ;;
        --dry_run|--dry-run) DRY_RUN=1; SHIFT=1 ;;
        --yes|-y) YES=1; SHIFT=1 ;;
        -h|--help) usage; exit 0 ;;
        *) return 1 ;;
    esac
    return 0
}

require_name_zone() {
    [ -n "$NAME" ] || die "--name TPU_NAME is required"
    [ -n "$ZONE" ] || die "--zone ZONE is required (e.g. us-central2-b)"
}

# gcloud's TPU VM command group with the zone (and project) every call needs.
gcloud_tpu() {
    local sub="$1"
    shift
    local extra=(--zone="$ZONE")
    [ -n "$PROJECT" ] && extra+=(--project="$PROJECT")
    run gcloud compute tpus tpu-vm "$sub" "$@" "${extra[@]}"
}

# Runs a shell command on TPU workers (default: all of them, in parallel).
on_workers() {
    local worker="$1" command="$2"
    gcloud_tpu ssh "$NAME" --worker="$worker" --command="$command"
}
