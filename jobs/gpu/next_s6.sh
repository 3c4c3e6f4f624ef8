# Prepared in session 5 for the next GPU call (issue 13): which pattern loses the weight gradients of a compiled
# simulated model on CUDA (torch 2.11), then the packed-sweep benchmark for bf16 (valid whatever the diagnosis).
# device command: bash jobs/gpu/next_s6.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 120 python3 jobs/gpu/diag_compiled_sim.py > $OUT/diag.txt 2>&1
echo "diag rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^DEBUG\|Warning\|warn" $OUT/diag.txt | head -30
timeout $(( 560 - $(date +%s) + T0 )) python3 benchmarks/packing.py --preset llama-20m --formats bf16 --trials 16 \
  --per-gpu 8 --steps 200 --seq-len 256 --batch 32 --device cuda --json $OUT/packing.json > $OUT/packing.txt 2>&1
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; tail -12 $OUT/packing.txt
