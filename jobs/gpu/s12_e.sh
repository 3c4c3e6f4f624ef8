# Session 12 (issue 13). gpt2-124m (seq 1024, batch 16) rows never measured: sim:E5M2 and sim:E8M10 (TF32 carrier),
# bf16 beside them, compiled, telemetry only at step 1000 (s7_c measured bf16, sim:E4M3 1.12x, sim:E8M3 1.14x).
# device command: bash jobs/gpu/s12_e.sh   (carry [".gpu"]; results in $OUT; the call had ~330 s)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 280 python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 --steps 20 --warmup 8 \
  --set numerics.base=bf16 --set train.telemetry_interval=1000 --backends bf16,sim:E5M2,sim:E8M10 --plain none \
  --json $OUT/gpt2.json > $OUT/gpt2.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|Error" $OUT/gpt2.txt | cut -c1-250 | head
