# Session 12 (issue 13). The packed llama-20m sweep of s12_c (16 trials of 1,000 steps: 78% of the ceiling end to
# end, 89% over the trials' span) at a study's shape: 24 trials (three waves of 8) of 1,500 steps, bf16, eager.
# device command: bash jobs/gpu/s12_d.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 560 python3 benchmarks/packing.py --preset llama-20m --formats bf16 --trials 24 --per-gpu 8 --steps 1500 \
  --seq-len 256 --batch 32 --device cuda --out /tmp/packing --json $OUT/packing.json > $OUT/packing.txt 2> $OUT/packing_err.txt
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep "^|\|^settings" $OUT/packing.txt; grep "^warning\|failed" $OUT/packing_err.txt | cut -c1-300
