# Session 5, device call 2 (issues 12 and 13), after the fixes: one host sync per step, no DeepSpeed all-reduce
# at world 1, and numerics.base=bf16 for sim. Steady state: 12 warm-up steps (the first telemetry step and its
# one-time kernel loads fall inside them), 20 timed. Then the compiled-sim-on-CUDA diagnosis.
# device command: bash jobs/gpu/verify_s5.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
left() { echo $(( ${1:-560} - $(date +%s) + T0 )); }
B="--seq-len 1024 --batch 16 --steps 32 --warmup 12"
timeout 170 python3 benchmarks/throughput.py --presets gpt2-124m --backends bf16 $B --host-profile \
  --json $OUT/gpt2_bf16.json > $OUT/gpt2_bf16.txt 2>&1
echo "gpt2 bf16 rc=$? $(( $(date +%s) - T0 )) s"; grep "^| gpt2\|^\[throughput" $OUT/gpt2_bf16.txt | head -4
timeout $(left 470) python3 benchmarks/throughput.py --presets gpt2-124m --backends sim:E4M3,sim:E8M3,sim:E5M2 $B \
  --plain "sim:E4M3" --set numerics.base=bf16 --json $OUT/gpt2_sim.json > $OUT/gpt2_sim.txt 2>&1
echo "gpt2 sim rc=$? $(( $(date +%s) - T0 )) s"; grep "^| gpt2\|^\[throughput" $OUT/gpt2_sim.txt | head -8
timeout $(left 570) python3 jobs/gpu/diag_compiled_sim.py > $OUT/diag.txt 2>&1
echo "diag rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^DEBUG\|Warning\|warn" $OUT/diag.txt | tail -24
