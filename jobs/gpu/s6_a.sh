# Session 6, device call 1 (issues 13, 14): the CUDA suite after the compiled-gradient fix (no no-op .to() on the
# autograd function's output) and compile_as_eager, with the new torchao _scaled_mm operand test and the CPU
# compile-check tests on this machine's torch 2.11; then llama-20m simulated formats at the bf16 base.
# device command: bash jobs/gpu/s6_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
echo "install done $(( $(date +%s) - T0 )) s"
timeout 200 python3 -m pytest -q -p no:cacheprovider -rf tests/test_compile_check.py \
  "tests/test_cuda_numerics.py" "tests/test_recipe_linear.py::test_fp8_tensorwise_gemm_operands_are_torchaos_real_ones" \
  > $OUT/cuda.txt 2>&1
echo "suite rc=$? $(( $(date +%s) - T0 )) s"; grep -E "passed|failed|^FAILED|^E " $OUT/cuda.txt | head -20
timeout $(( 570 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m \
  --backends bf16,sim:E4M3,sim:E8M3,sim:E5M2,sim:E4M3:scaling=tensor,sim:E8M10 --plain "bf16;sim:E4M3" \
  --set numerics.base=bf16 --seq-len 256 --batch 32 --steps 32 --warmup 12 --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama" $OUT/llama.txt | head -20
