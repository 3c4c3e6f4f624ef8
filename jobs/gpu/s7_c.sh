# Session 7, device call 3 (issues 13, 14): gpt2-124m (GPU-bound, unlike llama-20m) bf16 vs simulated formats and
# recipes, compiled; then the linear-stack probe under CUDA graphs with the reasons Inductor skips them.
# device command: bash jobs/gpu/s7_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 430 python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 --steps 20 --warmup 8 \
  --set numerics.base=bf16 --backends bf16,sim:E4M3,sim:E8M3,sim:mxfp8,sim:nvfp4 --plain none \
  --json $OUT/gpt2.json > $OUT/gpt2.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|Error" $OUT/gpt2.txt | head
TORCH_LOGS=perf_hints timeout $(( 575 - $(date +%s) + T0 )) python3 jobs/gpu/linear_host_probe.py > $OUT/probe.txt 2>&1
echo "probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^| \|skipping\|Error" $OUT/probe.txt | cut -c1-300 | head -20
