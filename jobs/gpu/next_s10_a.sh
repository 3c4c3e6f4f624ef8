# Prepared in session 9 (issues 13, 14). (1) The CUDA numerics suite: the compile probe per backend (2048 tokens;
# nvfp4's did not finish in s9_4's 80 s) and fp8_tensorwise's operands against torchao's cast. (2) The MLP probe:
# fp8_tensorwise now reuses its copies (s9_1: 3.41 ms against bf16 1.52), nvfp4's RHT butterfly (s9_2: its stages
# unfused). (3) The packed sweep with the ceiling measured where trials overlap (s9_4's ceiling was wrong).
# device command: bash jobs/gpu/next_s10_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 240 bash jobs/gpu/cuda_suite.sh | tail -20  # writes $OUT/cuda_suite.txt and .xml
timeout 90 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:fp8_tensorwise sim:nvfp4 > $OUT/mlp_probe.txt 2>&1
echo "mlp probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^## " $OUT/mlp_probe.txt
timeout $(( 565 - $(date +%s) + T0 )) python3 benchmarks/packing.py --preset llama-20m --formats bf16,sim:E4M3 \
  --trials 16 --per-gpu 8 --steps 400 --seq-len 256 --batch 32 --device cuda --out /tmp/packing \
  --json $OUT/packing.json > $OUT/packing.txt 2>&1
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^\[rank\|^W1\|^(" $OUT/packing.txt | tail -6
