#!/usr/bin/env bash
# The GPU proof of the CUDA backend (docs/CUDA.md), run on a GPU machine from the bundle that
# tools/gpu/prepare_cuda_proof.sh made, in parts that each fit one device call:
#
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT tests
#       cuda_tests (every test must PASS; a skip fails the proof), then compute-sanitizer
#       memcheck, racecheck, initcheck and synccheck on subsets of them.
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT quick
#       the short form: cuda_tests, memcheck and racecheck on the split-KV
#       attention and the MHA incremental test, a small cuda_step_bench grid, and the daemon's
#       --device=cuda flag tests.
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT serve
#       the daemon's integration tests against --device=cuda (CATSERVE_TEST_DEVICE=cuda), then
#       tools/bench/loadgen.py at concurrency 256 against a GPU daemon on a random model of the
#       paper's shape (its last column is the serving share: the host's part of each scheduler
#       iteration, which must stay below 5% at chunk 8 now that the device draws the tokens), and
#       cuda_step_bench's numbers for the same batch (its last column: bytes copied to the host
#       per step).
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT compare
#       the authors' generator (benchmark.py, through .gpu-bundle/shared/tools/official-bench.sh
#       and the liger-kernel wheel in .gpu-bundle/wheels) and cuda_step_bench --authors on the
#       same cells, BS:CTX:CHUNK, in one call: $COMPARE_CELLS, default 256:2048:8 64:2048:8
#       1:2048:8 (each of the authors' cells compiles for 40-60 s first). Both print
#       "RESULT ... tok_per_s=" lines; catserve's run twice, --attention=auto and split_kv.
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT pressure
#       the pressure trade on the GPU: loadgen --pressure_policies=queue,degrade with ~3,500-token
#       prompts on a 4K-context random model of the paper's shape, the pool holding a third of
#       the offered sequences at chunk 8 (tokens/s and p99 TTFT of each policy).
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT decode
#       cuda_attention_bench (the decode attention alone against the measured copy bandwidth),
#       then cuda_step_bench's decode grid (context 1024-4096, batch 1-256, chunk 4-16) and 4K
#       prefill with FlashInfer and graphs, FlashInfer without graphs, and the split-KV kernel,
#       alternated twice: each cell's step time against its floor.
#
# Prints one line per step (exit status, seconds) and the end of its log; every log goes into
# RESULTS_DIR/cuda_proof_PART.tar.gz. Exits 0 only when every step passed.
set -uo pipefail
set -f  # the gtest filters below are patterns for gtest, not for the shell
out=${1:?usage: cuda_proof.sh RESULTS_DIR tests|quick|serve|compare|pressure|decode}
part=${2:?usage: cuda_proof.sh RESULTS_DIR tests|quick|serve|compare|pressure|decode}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
g=${TMPDIR:-$(dirname "$(mktemp -u)")}/catserve-gpu
logs=$(mktemp -d)
failed=0

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - start)) s"
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|ERROR SUMMARY|RACECHECK SUMMARY|^\| |^RESULT' \
    "$logs/$name.log" | head -30
  tail -n 3 "$logs/$name.log"
  [ "$rc" -eq 0 ] || failed=1
}

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null |
  head -1)
cs() {  # the compute-sanitizer command line for TOOL on the cuda_tests matching FILTER
  echo "${sanitizer:-compute-sanitizer}" --tool "$1" --error-exitcode 1 cuda_tests \
    --gtest_color=no "--gtest_filter=$2"
}

case "$part" in
  tests)
    step cuda_tests 180 cuda_tests --gtest_color=no
    grep -q '^\[  SKIPPED \]' "$logs/cuda_tests.log" && { echo "cuda_tests skipped tests"; failed=1; }
    step memcheck 150 $(cs memcheck \
      '*Incremental*:*Pool*:*LoadsThroughEngineLoad*:*DeviceSampler*Greedy*:*DeviceSampler*Seeded*:*SplitKv*')
    # The attention routes' kernels (FlashInfer's decode, the tensor-core prefill) and the fused
    # qkv post-processing with its cache store.
    step memcheck_routes 150 $(cs memcheck \
      '*FlashInferDecode*:*PrefillAttentionCase*:*PrefillAttentionLarge*:*FusedQkv*:*FusedSilu*:*WideHeads*Auto*:*CudaGraph*')
    step racecheck 120 $(cs racecheck '*Incremental*Gqa*:*DeviceSampler*Seeded*:*SplitKv*')
    step racecheck_routes 150 $(cs racecheck \
      '*FlashInferDecode*:*PrefillAttentionCase*:*PrefillAttentionLarge*:*FusedQkv*')
    # initcheck only where cuBLAS writes nothing: on an H200 it reports every read of a buffer a
    # cublasGemmEx wrote (tools/gpu/initcheck_cublas_probe.cu shows it on one GEMM), so the
    # engine tests drown in such reports (102541 on *Incremental*Mha*, all of them reads of GEMM
    # outputs).
    step initcheck 100 $(cs initcheck '*SplitKv*:*Pool*')
    step synccheck 100 $(cs synccheck '*Incremental*Mha*')
    ;;
  quick)
    step cuda_tests 170 cuda_tests --gtest_color=no
    grep -q '^\[  SKIPPED \]' "$logs/cuda_tests.log" && { echo "cuda_tests skipped tests"; failed=1; }
    step memcheck 90 $(cs memcheck '*SplitKv*:*Incremental*Mha*:*FlashInferDecode*:*PrefillAttentionCase*')
    step racecheck 90 $(cs racecheck '*SplitKv*:*FlashInferDecode*:*PrefillAttentionCase*')
    for attention in auto split_kv; do
      step "cuda_step_bench_$attention" 60 cuda_step_bench --attention=$attention --contexts=4096 \
        --batches=1,64,256 --chunks=1,16 --prefill=4096 --cycles=1
    done
    bin=$(cat "$here/server_bin_path")
    [ -e "$bin" ] || { mkdir -p "$(dirname "$bin")" && cp "$g/bin/catserve" "$bin"; }
    step server_tests_cuda 60 env CATSERVE_TEST_DEVICE=cuda server_tests --gtest_color=no \
      --gtest_filter='DeviceFlag*'
    ;;
  compare)
    cells=${COMPARE_CELLS:-"256:2048:8 64:2048:8 1:2048:8"}
    for attention in auto split_kv; do
      step "catserve_authors_$attention" 240 cuda_step_bench --attention=$attention \
        --authors="$(echo $cells | tr ' ' ',')" --authors_only --pool_gib=40
    done
    step official 600 env T_OFF=150 bash "$here/shared/tools/official-bench.sh" "$here/wheels" \
      "$logs/official" $cells
    ;;
  serve)
    bin=$(cat "$here/server_bin_path")
    [ -e "$bin" ] || { mkdir -p "$(dirname "$bin")" && cp "$g/bin/catserve" "$bin"; }
    step server_tests_cuda 200 env CATSERVE_TEST_DEVICE=cuda server_tests --gtest_color=no \
      --gtest_filter='DeviceFlag*:Generate*:Concurrency*:Lifecycle*:SamplingApi*:PrefixCacheDaemon*:OpenAiPort*'
    model=$(mktemp -d)/paper
    step paper_model 120 python3 "$root/tools/bench/make_random_model.py" "$model" \
      --tokenizer_from "$root/models/cat-small-en" --hidden 1536 --layers 12 --heads 24 \
      --compressor_hidden 768 --compressor_layers 3 --context 2048
    step loadgen_256 200 env CATSERVE_PY_STUBS="$here/stubs" PYTHONUNBUFFERED=1 \
      python3 "$root/tools/bench/loadgen.py" --model_dir="$model" --catserve="$g/bin/catserve" \
      --device=cuda --concurrency=256 --chunk_sizes=2,8,16 --prompt_tokens=128 --max_tokens=64 \
      --kv_pool_mb=16384
    # Engine-only at loadgen's shape: 256 sequences at about 128 + 64 / 2 tokens of context.
    step cuda_step_bench 120 cuda_step_bench --contexts=160 --batches=256 --chunks=2,8,16 \
      --prefill=256 --cycles=1
    ;;
  pressure)
    # The pressure trade on the GPU (docs/SCHEDULER.md): ~3,500-token prompts on the paper's shape,
    # 96 clients on the balanced tier (chunk 8, coarsest 16) against a pool that holds 32 of them
    # at chunk 8; queue against degrade, one daemon each, in this one call.
    model=$(mktemp -d)/paper4k
    step paper_model_4k 120 python3 "$root/tools/bench/make_random_model.py" "$model" \
      --tokenizer_from "$root/models/cat-small-en" --hidden 1536 --layers 12 --heads 24 \
      --compressor_hidden 768 --compressor_layers 3 --context 4096
    step loadgen_pressure 420 env CATSERVE_PY_STUBS="$here/stubs" PYTHONUNBUFFERED=1 \
      python3 "$root/tools/bench/loadgen.py" --model_dir="$model" --catserve="$g/bin/catserve" \
      --device=cuda --pressure_policies=queue,degrade --tier=balanced --concurrency=96 \
      --pool_sequences=32 --pool_chunk_size=8 --prompt_tokens=3500 --max_tokens=64 --repeat=1
    ;;
  decode)
    step cuda_attention_bench 120 cuda_attention_bench --batches=16,64,256 --keys=1024,4096
    # Every decode cell of the target grid: FlashInfer with graphs, without, and catserve's own
    # kernel, alternated twice in one call.
    for setting in auto:on auto:off split_kv:off auto:on auto:off split_kv:off; do
      attention=${setting%:*} graphs=${setting#*:}
      step "cuda_step_bench_decode_${attention}_graphs_$graphs" 150 cuda_step_bench \
        --attention=$attention --graphs=$graphs --contexts=1024,2048,4096 --batches=1,16,64,256 \
        --chunks=4,8,16 --prefill=4096 --cycles=1
    done
    ;;
  *)
    echo "unknown part '$part': tests, quick, serve, compare, pressure or decode" >&2
    exit 2
    ;;
esac
tar -C "$logs" -czf "$out/cuda_proof_$part.tar.gz" .
echo "cuda proof ($part): $([ "$failed" -eq 0 ] && echo PASSED || echo FAILED)"
exit "$failed"
