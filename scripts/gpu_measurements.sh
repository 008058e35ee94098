#!/usr/bin/env bash
# The GPU speed measurements the open issues ask for, in one device call after the campaign's
# sessions; each stage has its own time limit and writes its JSON and log under $OUT as it goes.
#
#   bash scripts/gpu_measurements.sh [STAGE ...]     # stages: kernel step launches h200 meta mixture scaling compile stalls torch (default: kernel)
#
# The stages' limits add up to more than one call: run `kernel` (at most 9 minutes), `meta`, `mixture`
# (at most 7) and `compile` (at most 4 per level) in separate calls, or one of them after a campaign
# session on a warm machine.
#
#   kernel   benchmarks/kernel_step.py at 100M parameters: the pretrained optimizer (float32 and
#            bfloat16 state; its weights loaded and folded in), nominal, mlp against optax.adam
#            (issue 11; ~16-26 s of compilation per variant: up to 8 minutes, alone in a call);
#            KERNEL_ARGS="--archs pretrained_bf16 --variants fused_*folded* --budget-s 150" narrows it
#   step     benchmarks/kernel_step.py at 100M parameters, only the variants issue 11 still asks about
#            (the pretrained step folded, its anchor table, through optax; mlp's default, bfloat16
#            products, persistent and 8-warp launches, through optax), each with --profile (~5 minutes)
#   launches mlp's reduction pass inside the previous tensor's main pass launch (KernelConfig(reduction=
#            "overlapped"), stop 63's untimed change) against separate launches, at 128 x 2, bf16 and TF32
#            products, float32 and bfloat16 momenta, profiled, each with its update error on the GPU (~3 minutes)
#   h200     what issue 11 still needs from the H200, in one call (~8 minutes; carry .data/fashion):
#            the step stage's deciding variants (pretrained folded, its network in float32 and in packed
#            float16 at 512 x 4 and 256 x 4 (stop 63), through optax; mlp default at 128 x 2, bfloat16
#            products at 128 x 2 with float32 and bfloat16 momenta, the reduction separate and overlapped;
#            profiled), mlp's accuracy on the GPU at each product
#            precision (kernel_check), the masking test with the compiled kernels (pytest), then meta-training at 1,024 tasks with the fused step against the plain reference
#   meta     benchmarks/meta_throughput.py, canonical config at 128 and 1,024 tasks against the plain
#            reference, lopt with kernel modes xla and auto (fused mlp step; issue 11), and where the device
#            time of each goes at 1,024 tasks (--profile; ~3 minutes)
#   mixture  benchmarks/mixture_throughput.py on the campaign's 9 structures as the campaign runs them
#            (4 configs, 128 pairs, 500-step normalisers, nominal's concatenated layout, which compiles
#            ~3x faster on the GPU than the per-tensor one): set-up, compile, FLOP/s against the
#            canonical config, per-structure breakdown (issue 10; ~6 minutes cold; carry .data)
#   scaling  benchmarks/scaling.py on every visible GPU count of 1, 2, 4, 8 (issue 17; a multi-GPU kind):
#            canonical (128 pairs per GPU) and the campaign's 9 structures (8 pairs per GPU per structure,
#            4 configs, 500-step normalisers) at the same per-GPU load, efficiencies against one GPU,
#            and theta after 5 outer steps on N GPUs against one (~2 minutes per device count; carry .data)
#   torch    lopt.torch on CUDA at 100M parameters: benchmarks/torch_profile.py (the kernels a step of the
#            shipped weights spends its time in, compiled and eager, and `nominal` compiled; how much of
#            the step the GPU is busy), then benchmarks/torch_step.py against AdamW (~4 minutes)
#   compile  the mixture stage's set-up and compile alone (no canonical run, 50-step normalisers,
#            10 outer steps), once per XLA autotuning level in COMPILE_LEVELS (default "2 0"; XLA's
#            default is 4, measured by the mixture stage): parallel autotuning with correctness checks
#            logs "Delay kernel timed out" in every cold compile; ~3 minutes per level, cold.
#            COMPILE_MIXTURE=taskset measures the issue's shape instead of the campaign's 9 x 4 x 128:
#            16 buckets drawn from the taskset catalogue x 8 configs x 8 pairs. COMPILE_PASSES="cold warm"
#            runs each level a second time with the first run's caches (XLA programs, task costs,
#            normaliser fits): the set-up of a repeat run on the same machine
#   stalls   why mlp's main pass issues at ~40% of the SMs' rate (stop 60: 13% fewer instructions bought
#            1.7%): Nsight Compute (`ncu`, where the machine has it) on one launch of the bf16-product main
#            pass at 10M parameters per variant in STALL_VARIANTS: occupancy, scheduler and warp-state
#            sections, each stall reason's share of the warps' cycles, memory workload (~1 minute per
#            variant); says so and stops when there is no ncu
# Copy the returned files to benchmarks/results/<name>_gpu-<device>.json afterwards.
set -u
: "${OUT:?run this inside a device call (OUT unset)}"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false \
       LOPT_FASHION_MNIST_DIR="$PWD/.data/fashion" LOPT_FORTUNES_DIR="$PWD/.data/fortunes" \
       LOPT_WORDNET_DIR="$PWD/.data/wordnet"
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(kernel)
for stage in "${STAGES[@]}"; do
    case "$stage" in
        kernel) name=kernel_step limit=540
                cmd=(--sizes 1e8 --archs pretrained pretrained_bf16 nominal mlp --check-size 0 --repeats 3 --budget-s 420)
                # KERNEL_ARGS: more arguments, later ones winning, e.g. "--archs mlp_bf16 --variants fused_*"
                # (read as words, never glob-expanded by the shell)
                read -ra extra <<< "${KERNEL_ARGS:-}"; cmd+=("${extra[@]}") ;;
        launches) name=kernel_step limit=240  # stop 63's overlapped reduction against separate launches (~3 minutes)
              cmd=(--sizes 1e8 --archs mlp_bf16 mlp --check-size 0 --repeats 3 --profile --budget-s 200
                   --variants fused_apply_b128w2bf16 fused_apply_b128w2bf16ov fused_apply_b128w2 fused_apply_b128w2ov) ;;
        step) name=kernel_step limit=330  # issue 11's open variants at 100M, each profiled (~5 minutes)
              cmd=(--sizes 1e8 --archs pretrained mlp --check-size 0 --repeats 3 --profile --budget-s 280
                   --variants fused_apply_folded_b512w4 fused_apply_folded_b512w4h16 fused_apply_folded_b256w4h16 fused_apply_folded_b512w4_table_anchor fused_optax_folded
                   fused_apply_b256w4 fused_apply_b256w4bf16 'fused_apply_b128w4p*' fused_apply_b256w8 fused_optax) ;;
        h200) timeout -k 10 270 python3 -u benchmarks/kernel_step.py --sizes 1e8 --archs pretrained mlp mlp_bf16 \
                  --check-size 0 --repeats 3 --profile --budget-s 230 --variants fused_apply_folded_b512w4 fused_apply_folded_b512w4h16 fused_apply_folded_b256w4h16 \
                  fused_optax_folded fused_apply_b128w2 fused_apply_b128w2bf16 fused_apply_b128w2bf16ov \
                  --out "$OUT/kernel_step.json" > "$OUT/kernel_step.log" 2>&1
              echo "[h200: step] exit $?"; grep -E "^ +100M" "$OUT/kernel_step.log" | tail -12
              timeout -k 10 60 python3 -u benchmarks/kernel_step.py --sizes --archs mlp --check-size 1000000 \
                  --out "$OUT/kernel_check.json" > "$OUT/kernel_check.log" 2>&1
              echo "[h200: check] exit $?"; grep -i "err" "$OUT/kernel_check.log" | tail -4
              # the compiled kernels' masking of NaN and infinities (their inline-PTX test, stop 64) against XLA's,
              # their bfloat16 state's rounding (stop 65) and float16 multiply-adds with the ReLU (stop 65) against the CPU forms
              timeout -k 10 120 python3 -m pytest -q -p no:cacheprovider -W ignore::UserWarning tests/kernels/test_kernel_masking.py \
                  tests/kernels/test_bf16_rounding.py tests/kernels/test_packed_half.py -k pallas \
                  > "$OUT/kernel_masking.log" 2>&1
              echo "[h200: masking on the GPU] exit $?"; tail -3 "$OUT/kernel_masking.log"
              name=meta_throughput limit=120 cmd=(--tasks 1024 --kernels auto) ;;
        meta) name=meta_throughput limit=240 cmd=(--tasks 128 1024 --kernels xla auto --profile) ;;
        mixture) name=mixture_throughput limit=420
                cmd=(--structures campaign/state.json --buckets 9 --configs 4 --tasks 128 --set normalizer.num_steps=500
                     --set 'lopt.config={"concatenate_tensors": true}') ;;
        scaling) name=scaling limit=560
                cmd=(--structures campaign/state.json --buckets 9 --configs-per-bucket 4 --steps 10 --timeout-s 240
                     --set normalizer.num_steps=500 --set 'lopt.config={"concatenate_tensors": true}') ;;
        compile)
            if [ "${COMPILE_MIXTURE:-campaign}" = taskset ]; then  # the issue's 16 drawn buckets x 8 configs
                shape=(--buckets 16 --configs 8 --tasks 8)
                # the catalogue's costs ship with lopt, counted under the CPU's JAX: does this JAX count the same?
                python3 -c "import jax; from lopt.tasks.cost_cache import check_shipped_costs as c, shipped_sample as s
print('[compile] shipped task costs, one per family, recounted under JAX', jax.__version__, ':', c(s()) or 'all agree')" \
                    2>&1 | grep -v -i warning | tail -3
            else
                shape=(--structures campaign/state.json --buckets 9 --configs 4 --tasks 128)
            fi
            # COMPILE_PASSES="cold warm": a second run with the first one's caches (XLA programs, task
            # costs, normaliser fits), i.e. what a repeat run on the same machine sees
            for level in ${COMPILE_LEVELS:-2 0}; do
                caches=$(mktemp -d)
                for pass in ${COMPILE_PASSES:-cold}; do
                    name="compile_autotune${level}_$pass"
                    JAX_COMPILATION_CACHE_DIR="$caches/xla" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
                    LOPT_CACHE_DIR="$caches/lopt" LOPT_COST_CACHE="$caches/costs" LOPT_PREWARM_LOGS="$OUT/${name}_workers" \
                    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=$level" timeout -k 10 240 python3 -u \
                        benchmarks/mixture_throughput.py --no-canonical "${shape[@]}" --steps 10 \
                        --set normalizer.num_steps=50 --set 'lopt.config={"concatenate_tensors": true}' \
                        --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
                    echo "[compile, autotune level $level, $pass] exit $?, $(grep -c "Delay kernel timed out" "$OUT/$name.log") delay-kernel timeouts"; grep -v -i -E "warning|cuda_timer" "$OUT/$name.log" | tail -8
                    # a call returns at most 8 files: the set-up workers' logs travel as one archive
                    if [ -d "$OUT/${name}_workers" ]; then
                        tar czf "$OUT/${name}_workers.tgz" -C "$OUT" "${name}_workers" && rm -r "$OUT/${name}_workers"
                    fi
                done
            done
            continue ;;
        stalls)
            if command -v ncu > /dev/null; then
                # STALL_VARIANTS: kernel_step variants to profile (default: the 256 x 4 warp-group launch and
                # the one-warp 128 x 1 launch of stop 61)
                for variant in ${STALL_VARIANTS:-fused_apply_b256w4bf16 fused_apply_b128w1bf16}; do
                    timeout -k 10 200 ncu --target-processes all -k regex:lopt_mlp_step -c 1 --section LaunchStats \
                        --section Occupancy --section SchedulerStats --section WarpStateStats \
                        --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
                        --metrics 'regex:smsp__warp_issue_stalled_.*_per_warp_active\.pct' \
                        python3 -u benchmarks/kernel_step.py --sizes 1e7 --archs mlp --check-size 0 --repeats 1 \
                        --variants "$variant" --budget-s 60 > "$OUT/ncu_mlp_step_$variant.log" 2>&1
                    echo "[stalls] $variant exit $?"
                    grep -E "Registers Per|Eligible Warps|Issue Slots Busy|Theoretical Occ|stalled" \
                        "$OUT/ncu_mlp_step_$variant.log" | awk '$NF+0 >= 0.5 || !/stalled/' | head -30
                done
            else
                echo "[stalls] no ncu (Nsight Compute) on this machine:" $(ls -d /usr/local/cuda*/bin 2>/dev/null)
            fi
            continue ;;
        torch)
            i=0
            for args in "--arch pretrained --compile" "--arch pretrained" "--arch nominal --compile"; do
                i=$((i + 1))
                read -ra words <<< "$args"
                timeout -k 10 170 python3 -u benchmarks/torch_profile.py --device cuda --size 1e8 "${words[@]}" \
                    --top 25 --out "$OUT/torch_profile_$i.json" > "$OUT/torch_profile_$i.log" 2>&1
                echo "[torch profile: $args] exit $?"; grep -v -i -E "warn|USDT" "$OUT/torch_profile_$i.log" | tail -28
            done
            name=torch_step limit=200 cmd=(--device cuda --sizes 1e8 --archs nominal mlp --no-jax --compile) ;;
        *) echo "unknown stage $stage (kernel, step, launches, h200, meta, mixture, scaling, compile, stalls or torch)" >&2; exit 2 ;;
    esac
    timeout -k 10 "$limit" python3 -u "benchmarks/$name.py" "${cmd[@]}" --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
    echo "[$stage] exit $?"; tail -15 "$OUT/$name.log"
done
