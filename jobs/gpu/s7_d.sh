# Session 7, device call 4 (issue 14): recipe step times beside bf16, gpt2-124m then llama-20m, compiled; the
# counters' second graph kept out of the timed window (telemetry only at the last step: its compile took 66-68 s
# per trial at gpt2-124m in s7_c).
# device command: bash jobs/gpu/s7_d.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
S="--steps 14 --warmup 6 --plain none --set train.telemetry_interval=1000"
timeout 230 python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 $S \
  --backends bf16,sim:mxfp8,sim:nvfp4 --json $OUT/gpt2.json > $OUT/gpt2.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|Error" $OUT/gpt2.txt | head
timeout $(( 330 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 $S \
  --backends bf16,sim:mxfp8,sim:nvfp4,sim:fp8_tensorwise --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|Error" $OUT/llama.txt | head
