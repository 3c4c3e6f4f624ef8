# Prepared in session 7 for the next GPU call. (1) Issue 13: why a llama-20m sim:E4M3 step took ~4 ms longer than
# bf16 in s6_b and s7_a although it launches fewer kernels: both loops, with the new per-step sync wait (GPU work
# left when the host has queued a step) and the CUDA allocator's events. (2) Issue 14: sim:fp8_tensorwise beside
# torchao's fp8 on one seed (the pair runs first; JSON after every run).
# device command: bash jobs/gpu/next_s8_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 240 python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 --steps 24 --warmup 10 \
  --set numerics.base=bf16 --backends bf16,sim:E4M3 --plain all --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama" $OUT/llama.txt | cut -c1-400
timeout $(( 575 - $(date +%s) + T0 )) python3 benchmarks/fp8_agreement.py --preset llama-20m --steps 100 \
  --seq-len 256 --batch 32 --json $OUT/fp8_agreement.json > $OUT/fp8_agreement.txt 2>&1
echo "agreement rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[fp8\|^| " $OUT/fp8_agreement.txt
