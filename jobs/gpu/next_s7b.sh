# Prepared in session 6 (issues 13, 14): the rows issue 13's table still lacks and the recipe step times.
# device command: bash jobs/gpu/next_s7b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 250 python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 --steps 24 --warmup 10 \
  --set numerics.base=bf16 --backends bf16,sim:E4M3,sim:E8M3 --plain none --json $OUT/gpt2.json > $OUT/gpt2.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2.txt
timeout $(( 420 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 24 --warmup 10 --backends sim:mxfp8,sim:nvfp4,sim:fp8_tensorwise --plain none --json $OUT/recipes.json \
  > $OUT/recipes.txt 2>&1
echo "recipes rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/recipes.txt
timeout $(( 570 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 24 --warmup 10 --backends fp32,sim:E8M23 --plain none --json $OUT/e8m23.json > $OUT/e8m23.txt 2>&1
echo "e8m23 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/e8m23.txt
