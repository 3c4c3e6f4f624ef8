# Prepared in session 8 (issues 13, 14): gpt2-124m (seq 1024, batch 16) block by block with the head compiled too
# (s8_3 ran it eager: bf16 52.6 ms against 35.3 as one graph), every format the issues name, and one bf16 row as one
# graph in the same call for the head's effect. Telemetry only at the last step.
# device command: bash jobs/gpu/next_s9_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
S="--presets gpt2-124m --seq-len 1024 --batch 16 --steps 16 --warmup 6 --plain none --set train.telemetry_interval=1000"
timeout 120 python3 benchmarks/throughput.py $S --backends bf16 --json $OUT/gpt2_graph.json > $OUT/gpt2_graph.txt 2>&1
echo "one graph rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2_graph.txt | cut -c1-200
timeout $(( 560 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $S --set numerics.base=bf16 \
  --set train.compile_scope=blocks --profile \
  --backends bf16,sim:E4M3,sim:mxfp8,sim:nvfp4,sim:E8M3,sim:E5M2,sim:fp8_tensorwise,sim:fp8_block,sim:E8M10 \
  --json $OUT/gpt2_blocks.json > $OUT/gpt2_blocks.txt 2>&1
echo "blocks rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2_blocks.txt | cut -c1-200
