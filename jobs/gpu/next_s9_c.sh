# Prepared in session 8 (issue 13 item 5): the packed study-style sweep, 16 llama-20m trials 8 per GPU against one
# trial alone and the saturation ceiling, bf16 and sim:E4M3 (eager trials, as the study runs them).
# device command: bash jobs/gpu/next_s9_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 560 python3 benchmarks/packing.py --preset llama-20m --formats bf16,sim:E4M3 --trials 16 --per-gpu 8 \
  --steps 200 --seq-len 256 --batch 32 --device cuda --out /tmp/packing --json $OUT/packing.json > $OUT/packing.txt 2>&1
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; tail -12 $OUT/packing.txt
