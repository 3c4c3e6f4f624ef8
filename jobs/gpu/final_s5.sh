# Session 5, device call 3 (issue 13): the CUDA numerics suite after the compiled-backward fix, then simulated
# formats at llama-20m (seq 256, batch 32) with numerics.base=bf16, steady state (12 warm-up steps, 20 timed).
# device command: bash jobs/gpu/final_s5.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 150 python3 -m pytest -q -m cuda -p no:cacheprovider -rf tests/test_cuda_numerics.py > $OUT/cuda_numerics.txt 2>&1
echo "cuda numerics rc=$? $(( $(date +%s) - T0 )) s"; grep -E "passed|failed|^FAILED" $OUT/cuda_numerics.txt | tail -8
timeout $(( 330 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m \
  --backends bf16,sim:E4M3,sim:E8M3,sim:E5M2,sim:E4M3:scaling=tensor,sim:E8M10 --plain "bf16;sim:E4M3" \
  --set numerics.base=bf16 --seq-len 256 --batch 32 --steps 32 --warmup 12 --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama" $OUT/llama.txt | head -16
