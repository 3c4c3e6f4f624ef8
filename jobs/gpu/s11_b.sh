# Prepared in session 10 (issues 13, 14). (1) Compiled vs eager gradients of llama-20m itself (one micro-batch):
# the noise of correct compiles (bf16, sim:E4M3 with the bf16 base) against sim:mxfp8 with every Inductor cache
# disabled (wrong in s10_5's probe), to set the tolerance of a first-step check in the trainer. (2) The packed sweep
# with trials of 2,000 steps (study-style; s10_1's 400-step trials spent more time starting than stepping) and the
# new split of its wall time and every trial's start-up.
# As run (s11_3, 2026-11-29): compiled vs eager, all gradients: bf16 0.00179, sim:E4M3:base=bf16 0.00174, sim:mxfp8
# 0.00479, sim:mxfp8:base=fp32 0.00483 (the fault was 0.099). Packing: 59% of the ceiling; docs/benchmarks.md, session 11.
# device command: bash jobs/gpu/s11_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 timeout 200 python3 jobs/gpu/model_grad_check.py llama-20m blocks bf16 \
  sim:E4M3:base=bf16 sim:mxfp8 sim:mxfp8:base=fp32 2>&1 | grep -v "^W1\|Warning" | tee $OUT/model_grad_check.txt
timeout $(( 565 - $(date +%s) + T0 )) python3 benchmarks/packing.py --preset llama-20m --formats bf16 \
  --trials 16 --per-gpu 8 --steps 2000 --seq-len 256 --batch 32 --device cuda --out /tmp/packing \
  --json $OUT/packing.json > $OUT/packing.txt 2>&1
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep "^|\|^settings" $OUT/packing.txt
