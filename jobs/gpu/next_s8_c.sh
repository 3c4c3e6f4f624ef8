# Prepared in session 7 (issues 13, 14): recipe step times beside bf16 at llama-20m (telemetry only at the last
# step, so no counting graph compiles in the timed window), then train.compile_scope=blocks at gpt2-124m: the first
# step (compilation) and the steady step against one graph (s7_c: bf16 35.3, sim:E4M3 39.7 ms; the sim counting
# graph alone compiled for 66-68 s there).
# device command: bash jobs/gpu/next_s8_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
S="--steps 16 --warmup 6 --plain none --set train.telemetry_interval=1000"
timeout 280 python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 $S \
  --backends bf16,sim:mxfp8,sim:nvfp4,sim:fp8_tensorwise --json $OUT/recipes.json > $OUT/recipes.txt 2>&1
echo "recipes rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/recipes.txt
timeout $(( 575 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 \
  $S --set numerics.base=bf16 --set train.compile_scope=blocks --backends bf16,sim:E4M3,sim:mxfp8 \
  --json $OUT/gpt2_blocks.json > $OUT/gpt2_blocks.txt 2>&1
echo "gpt2 blocks rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2_blocks.txt
