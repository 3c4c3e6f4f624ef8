# As run in session 9 (s9_1). Prepared in session 8 (issues 13, 14). (1) gpt2-124m (seq 1024, batch 16) bf16 as one graph, for the head's effect
# below. (2) Where a recipe's GPU time goes: one gpt2 MLP, fwd+bwd, compiled, bf16 vs sim:E4M3 / mxfp8 / nvfp4 /
# fp8_tensorwise, with its top kernels (jobs/gpu/recipe_mlp_probe.py). (3) gpt2-124m block by block with the head
# compiled too (s8_3 ran it eager: bf16 52.6 ms against 35.3 as one graph), kernel profile per row. Telemetry only
# at the last step.
# device command: bash jobs/gpu/s9_1.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
S="--presets gpt2-124m --seq-len 1024 --batch 16 --steps 16 --warmup 6 --plain none --set train.telemetry_interval=1000"
timeout 110 python3 benchmarks/throughput.py $S --backends bf16 --json $OUT/gpt2_graph.json > $OUT/gpt2_graph.txt 2>&1
echo "one graph rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2_graph.txt | cut -c1-200
timeout 170 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:E4M3 sim:mxfp8 sim:nvfp4 sim:fp8_tensorwise \
  > $OUT/mlp_probe.txt 2>&1
echo "mlp probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^## " $OUT/mlp_probe.txt
timeout $(( 565 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $S --set numerics.base=bf16 \
  --set train.compile_scope=blocks --profile --backends bf16,sim:mxfp8,sim:E4M3,sim:nvfp4,sim:E8M3,sim:E5M2 \
  --json $OUT/gpt2_blocks.json > $OUT/gpt2_blocks.txt 2>&1
echo "blocks rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^\[profile" $OUT/gpt2_blocks.txt | cut -c1-300
