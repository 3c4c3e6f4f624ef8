# Session 5, device call 1 (issues 12 and 13): why is compiled sim wrong on CUDA, where does robustprec's host
# time go at gpt2-124m, and what does a simulated step cost with fp32 vs bf16 for what is not simulated.
# device command: bash jobs/gpu/probe_s5.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
left() { echo $(( ${1:-560} - $(date +%s) + T0 )); }
timeout 100 python3 jobs/gpu/diag_compiled_sim.py > $OUT/diag.txt 2>&1
echo "diag rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^DEBUG\|Warning\|warn" $OUT/diag.txt | tail -12
timeout 220 python3 benchmarks/throughput.py --presets gpt2-124m --backends bf16,sim:E4M3 --plain "bf16;sim:E4M3" \
  --seq-len 1024 --batch 16 --steps 14 --warmup 4 --profile --host-profile --json $OUT/gpt2_fp32base.json \
  > $OUT/gpt2_fp32base.txt 2>&1
echo "gpt2 base fp32 rc=$? $(( $(date +%s) - T0 )) s"; grep "^| gpt2\|^top" $OUT/gpt2_fp32base.txt | head -12
timeout $(left 565) python3 benchmarks/throughput.py --presets gpt2-124m --backends sim:E4M3,sim:E8M3,sim:E5M2 \
  --plain "sim:E4M3" --set numerics.base=bf16 --seq-len 1024 --batch 16 --steps 14 --warmup 4 --profile \
  --json $OUT/gpt2_bf16base.json > $OUT/gpt2_bf16base.txt 2>&1
echo "gpt2 base bf16 rc=$? $(( $(date +%s) - T0 )) s"; grep "^| gpt2\|^top" $OUT/gpt2_bf16base.txt | head -12
