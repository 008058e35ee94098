#!/usr/bin/env bash
# One GPU session of the pretrained optimizer's campaign, inside a rented-GPU call that returns $OUT.
#
#   bash scripts/campaign_gpu_session.sh [MINUTES [--set KEY=VALUE ...]]   # default 7.5; the call must allow MINUTES + 1.5
#
# Extra arguments go to lopt.pretrained.campaign after the script's own (a later --set wins), and
# are recorded with the session in state.json.
#
# Run it alone in its call: a call returns at most 8 files and this script leaves exactly 8 in $OUT.
# Anything else written there takes a session file's place (stop 55: two benchmark files after the
# session cost it run/warm_start.safetensors and run/metrics.jsonl, and the session could not be adopted).
#
# Reads the committed campaign/ state, meta-trains for MINUTES of wall time (set-up and compilation
# included), checkpoints the warm start (and a theta snapshot) every minute, and leaves in $OUT:
# campaign.log, c/state.json, c/run/{metrics.jsonl,warm_start.safetensors,config.json}, c/thetas.tgz
# (the snapshots) and xla_cache.tgz.partNN (the compiled bucket programs, for the next call:
# `cat xla_cache.tgz.part* > .xla_cache/cache.tgz` and carry that folder). Then, on the
# development machine: `python -m lopt.pretrained.campaign --state campaign --adopt <files_at>/c`
# and validate the snapshots on the CPU (`python -m lopt.pretrained.validate ...`, docs/pretrained.md).
# No validation runs on the GPU: its 9 evaluation programs compiled one after another there (~7 minutes
# measured; they are now compiled in parallel threads, not yet timed on the GPU), while the CPU scores a
# theta on all 18 validation configs in ~2 minutes. Carrying .xla_cache makes every compile a cache hit
# (sessions 8-9: programs ready 22-27 s after a 47 s set-up, instead of 70 s after an 84 s one).
# A call carries at most 64 MiB: the tracked tree (18.5 MiB now), .data and .xla_cache. With .data
# packed by `bash scripts/pack_data.sh` (xz: 32.4 MiB; it prints the total) the returned cache
# (`rm -rf .xla_cache; mkdir .xla_cache; cat <files_at>/xla_cache.tgz.part* > .xla_cache/cache.tgz`,
# 10.6 MiB) fits beside it: carry [".data", ".xla_cache"] on a cold machine. If the total is over,
# carry .data alone (the 9 programs then compile in ~100 s); a warm machine still holds the
# previous call's cache in /tmp/lopt_xla_cache (sessions 15-16: ready 23-24 s after set-up).
#
# XLA autotunes its GPU kernels (the default): the sessions up to 27 turned that off
# (--xla_gpu_autotune_level=0) to compile faster and took 2.07 s per outer step; sessions 28-29,
# autotuned and without full checkpoints, took 1.18 s (255 outer steps cold, 377 warm, per 8.7
# minutes). The XLA flags are part of the cache key; the returned cache (12 MB: the 9 bucket
# programs, the normaliser fits and XLA's per-fusion autotuning results) fits beside .data
# (check `du -sb .data .xla_cache` plus the tracked tree against the 64 MiB of a call).
#
# Data travel in .data/ (git-ignored, scripts/pack_data.sh): .data/fashion (Fashion-MNIST IDX
# .xz), .data/fortunes, .data/wordnet (data.{noun,verb,adj,adv}.xz); see docs/pretrained.md.
set -u
MINUTES="${1:-7.5}"
shift $(( $# > 0 ? 1 : 0 ))
: "${OUT:?run this inside a device call (OUT unset)}"
export LOPT_FASHION_MNIST_DIR="$PWD/.data/fashion" LOPT_FORTUNES_DIR="$PWD/.data/fortunes" \
       LOPT_WORDNET_DIR="$PWD/.data/wordnet" PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 \
       XLA_PYTHON_CLIENT_PREALLOCATE=false
CACHE=/tmp/lopt_xla_cache
# a second call on a warm machine from the same committed state would run a branch of the session before
# it (same seed, same tasks: stop 59's sessions 74-75): adopt and commit a session before the next call.
# CAMPAIGN_BRANCH=1 runs it anyway (adopt it with --adopt DIR --branch)
STATE_DIGEST=$(sha256sum campaign/state.json | cut -c1-64)
if [ -f /tmp/lopt_campaign_ran ] && [ "$(cat /tmp/lopt_campaign_ran)" = "$STATE_DIGEST" ] && [ "${CAMPAIGN_BRANCH:-0}" != 1 ]; then
    echo "[campaign] refused: this machine already ran a session from this campaign/state.json; adopt that session"
    echo "[campaign] (python -m lopt.pretrained.campaign --state campaign --adopt DIR), commit, then call again"
    exit 2
fi
echo "$STATE_DIGEST" > /tmp/lopt_campaign_ran
# the structures' normaliser fits (lopt.meta.structure_fit_cache) travel in the same archive: a
# session with the cache carried fits none of its pools again (16-29 s of the H200 set-up)
export LOPT_CACHE_DIR="$CACHE/lopt"
mkdir -p "$CACHE" "$OUT/c"
touch "$OUT/.started"  # files of the cache newer than this were written by this session
# the cache travels as one archive (.xla_cache/cache.tgz): a call's 64 MiB count each of its ~2,000
# small autotuning files by the disk blocks it takes (20 MB for 12 MB of data)
if [ -f .xla_cache/cache.tgz ]; then tar xzf .xla_cache/cache.tgz -C "$CACHE"
elif [ -d .xla_cache ]; then cp -r .xla_cache/. "$CACHE/"; fi
# without a carried cache every bucket program compiles: stop 61's cold call spent 421 s of its 8 minutes
# on set-up and ended inside its first outer step, with nothing to adopt
if [ ! -s .xla_cache/cache.tgz ] && [ -z "$(ls -A "$CACHE" 2>/dev/null)" ] \
        && python3 -c "import sys; sys.exit(float('$MINUTES') >= 9)"; then
    echo "[campaign] warning: no XLA cache carried and none on this machine: set-up takes ~7 minutes, so $MINUTES" \
         "minutes may end before the first outer step; give 9 minutes (a 600 s call) or carry .xla_cache"
fi
LIMIT=$(python3 -c "print(int(float('$MINUTES') * 60 + 50))")
timeout -k 15 "$LIMIT" python3 -m lopt.pretrained.campaign --state campaign --out "$OUT/c" --minutes "$MINUTES" \
    --reserve-minutes 0.3 --compile-cache "$CACHE" --set estimator.num_tasks=64 --set trainer.eval_every=0 \
    --set trainer.checkpoint_minutes=1 --set 'lopt.config={"concatenate_tensors": true}' "$@" 2>&1 | grep --line-buffered -v -i warning | tee "$OUT/campaign.log"
# a call returns at most 8 files of at most 16 MiB each: bundle the theta snapshots, split the cache
if [ -d "$OUT/c/run/thetas" ]; then tar czf "$OUT/c/thetas.tgz" -C "$OUT/c/run" thetas && rm -r "$OUT/c/run/thetas"; fi
# the session's own files come back first (6 of the 8): the cache gets the 2 slots left, and the next
# call carries it beside .data (~24 MiB of the 64): scripts/pack_cache.py packs this session's files
# before older ones, small ones (fits, records, autotuning) before executables, largest first, up
# to 24 MiB (27 structures' cache is larger: session 57 returned none under the earlier all-or-nothing rule)
rm -f /tmp/xla_cache.tgz
# (stop 62: the archive is at its 24 MiB with files left out, and a call carrying it still spent 302 s of
# set-up, 222 s of them compiling the programs left out: the line below says how many were)
# CACHE_BUDGET_MIB=28 when the call was made with `bash scripts/device_carry.sh aside` (the tree then takes
# ~3 MiB instead of ~31; .data 32.4): then a 28 MiB cache still fits the 64 MiB the next call carries
packed=$(python3 scripts/pack_cache.py "$CACHE" /tmp/xla_cache.tgz --budget-mib "${CACHE_BUDGET_MIB:-24}" \
             --newer-than "$OUT/.started") \
    && echo "[campaign] cache returned: ${packed#\[pack_cache\] }; whole cache $(du -sm "$CACHE" | cut -f1) MiB" \
    && split -b 15m -d /tmp/xla_cache.tgz "$OUT/xla_cache.tgz.part"
rm -f "$OUT/.started"
rm -f "$OUT/c/run/config_history.jsonl" "$OUT/c/run/lopt.lock" "$OUT/c/run/theta.safetensors" \
      "$OUT/c/run/theta_best.safetensors"
[ -s "$OUT/c/run/eval.jsonl" ] || rm -f "$OUT/c/run/eval.jsonl"
ls -la "$OUT" "$OUT/c" "$OUT/c/run"
