#!/usr/bin/env bash
# Makes room in a device call's 64 MiB for the campaign's XLA cache: moves the tracked files a campaign
# session does not read out of the tree before the call, and back after it.
#
#   bash scripts/device_carry.sh aside   # before the call: prints what the call will carry, in MiB
#   bash scripts/device_carry.sh back    # after it (and before any git command that would see them gone)
#
# A device call carries the tracked tree, untracked files and the paths named in `carry` (.data,
# .xla_cache). A campaign session reads only campaign/state.json and campaign/warm_start.safetensors
# of the campaign's folder, and no benchmark result or doc, so those travel for nothing: ~28 MiB of the
# 64. Moved aside, the XLA cache can take ~28 MiB instead of 24 (CACHE_BUDGET_MIB in
# scripts/campaign_gpu_session.sh): stop 62's call carried a 24 MiB cache that left programs out and
# spent 222 s of its set-up compiling them.
#
# Nothing is deleted or overwritten: `aside` refuses when the holding folder already holds files (an
# earlier `aside` not brought back), `back` refuses when a path to restore exists again in the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
HOLD="${LOPT_CARRY_HOLD:-/tmp/lopt_carry_aside}"
PATHS=(benchmarks/results docs campaign/thetas campaign/logs campaign/rewound campaign/hand
       campaign/best_theta.safetensors)

carried_mib() {  # tracked files still in the tree, untracked ones git does not ignore, .data, .xla_cache
    { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true
      find .data .xla_cache -type f -printf '%s\n' 2>/dev/null || true; } | awk '{s += $1} END {printf "%.1f", s / 1048576}'
}

case "${1:-}" in
    aside)
        if [ -d "$HOLD" ] && [ -n "$(ls -A "$HOLD")" ]; then
            echo "device_carry: $HOLD already holds files from an earlier 'aside'; run 'back' first" >&2
            exit 1
        fi
        for path in "${PATHS[@]}"; do
            [ -e "$path" ] || continue
            mkdir -p "$HOLD/$(dirname "$path")"
            mv "$path" "$HOLD/$path"
        done
        echo "device_carry: moved aside to $HOLD; a call carrying .data and .xla_cache takes $(carried_mib) MiB of 64"
        ;;
    back)
        [ -d "$HOLD" ] || { echo "device_carry: nothing aside ($HOLD does not exist)" >&2; exit 1; }
        for path in "${PATHS[@]}"; do
            [ -e "$HOLD/$path" ] || continue
            if [ -e "$path" ]; then
                echo "device_carry: $path exists in the tree again; left $HOLD/$path where it is" >&2
                exit 1
            fi
            mkdir -p "$(dirname "$path")"
            mv "$HOLD/$path" "$path"
        done
        find "$HOLD" -depth -type d -empty -delete
        echo "device_carry: brought back; git status should show no deletions"
        ;;
    *)
        echo "usage: bash scripts/device_carry.sh aside|back" >&2
        exit 2
        ;;
esac
