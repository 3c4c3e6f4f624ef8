# One device call (issues 12 and 13, after the fixes): the cuda trainer tests and the compiled-stack SR test, then
# robustprec vs the plain loop at llama-20m (seq 256, batch 32) and gpt2-124m (seq 1024, batch 16), compiled.
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 150 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda_trainer.py \
  "tests/test_cuda_numerics.py::test_compiled_stack_matches_eager_on_cuda" > $OUT/cuda_tests.txt 2>&1
echo "cuda tests rc=$? $(( $(date +%s) - T0 )) s"; grep -E "passed|failed|^FAILED|^E  " $OUT/cuda_tests.txt | head -12
timeout 230 python3 benchmarks/throughput.py --presets llama-20m --backends bf16,sim:E8M3,sim:E5M2,sim:E4M3 \
  --plain "bf16;sim:E4M3" --seq-len 256 --batch 32 --steps 20 --json $OUT/llama-20m.json > $OUT/llama-20m.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^| " $OUT/llama-20m.txt | head -14
timeout $(( 575 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets gpt2-124m --backends bf16,sim:E4M3 \
  --seq-len 1024 --batch 16 --steps 20 --json $OUT/gpt2-124m.json > $OUT/gpt2-124m.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^| " $OUT/gpt2-124m.txt | head -10
