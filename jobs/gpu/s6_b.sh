# Session 6, device call 2 (issues 13, 14): the compiled-gradient CUDA tests and torchao's real _scaled_mm
# operands on CUDA; llama-20m simulated formats at the bf16 base with the counters on telemetry steps only
# (default), kernel profile of bf16 and sim:E4M3; sim:E4M3 with counters on every step for their cost.
# device command: bash jobs/gpu/s6_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
C=tests/test_cuda_numerics.py
timeout 110 python3 -m pytest -q -p no:cacheprovider -rf $C::test_compiled_stack_matches_eager_on_cuda \
  $C::test_zero_graph_breaks_cuda $C::test_compiled_resume_and_evaluation_on_cuda \
  tests/test_recipe_linear.py::test_fp8_tensorwise_gemm_operands_are_torchaos_real_ones > $OUT/cuda.txt 2>&1
echo "tests rc=$? $(( $(date +%s) - T0 )) s"; grep -E "passed|failed|^FAILED|^E " $OUT/cuda.txt | head -12
B="--presets llama-20m --seq-len 256 --batch 32 --steps 28 --warmup 10 --set numerics.base=bf16"
timeout $(( 470 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $B --backends bf16,sim:E4M3,sim:E8M3,sim:E5M2 \
  --plain "bf16;sim:E4M3" --profile --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama" $OUT/llama.txt | head -12
timeout $(( 575 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $B --backends sim:E4M3 --plain none \
  --set numerics.counters=every_step --json $OUT/llama_every.json > $OUT/llama_every.txt 2>&1
echo "every-step rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/llama_every.txt
