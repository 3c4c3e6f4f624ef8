# Prepared in session 13 (issue 13). llama-20m as one graph, the rows still missing: sim:E8M10 (TF32 carrier) and
# sim:E8M23 against fp32, bf16 beside them (s13_3 measured bf16, sim:E8M3 and sim:E5M2, then ran out of time).
# device command: bash jobs/gpu/next_s14_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 550 python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 --steps 20 --warmup 8 \
  --plain none --set train.telemetry_interval=1000 --set numerics.base=bf16 \
  --backends bf16,sim:E8M10,fp32,sim:E8M23 --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^note" $OUT/llama.txt | cut -c1-250
