# Session 12 (issues 13, 14). (1) The packed sweep of llama-20m trials at last: every packing figure of sessions
# 9-11 was of `tiny` trials (configs/smoke.yaml's sweep.models chose the model; benchmarks/packing.py now sets
# it). bf16, 16 trials of 1,000 steps, 8 per GPU, eager. (2) The gpt2 MLP recipe probe of sim:fp8_tensorwise: wgrad
# now quantizes a per-tensor copy of g in g's own layout and transposes it (s12_2: a 387 us amax read the
# transposed view column by column).
# device command: bash jobs/gpu/s12_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 120 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:fp8_tensorwise > $OUT/fp8_tensorwise.txt 2>&1
echo "probe rc=$? $(( $(date +%s) - T0 )) s"; grep -A8 "^## " $OUT/fp8_tensorwise.txt | cut -c1-120
timeout $(( 540 - $(date +%s) + T0 )) python3 benchmarks/packing.py --preset llama-20m --formats bf16 --trials 16 \
  --per-gpu 8 --steps 1000 --seq-len 256 --batch 32 --device cuda --out /tmp/packing --json $OUT/packing.json \
  > $OUT/packing.txt 2> $OUT/packing_err.txt
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep "^|\|^settings" $OUT/packing.txt; grep "^warning\|failed" $OUT/packing_err.txt | cut -c1-300
