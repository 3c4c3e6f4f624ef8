# Session 8, call 3 (issues 13, 14): gpt2-124m (seq 1024, batch 16) with train.compile_scope=blocks (one block
# compiled, reused by all twelve), bf16 beside sim:E4M3, sim:E8M3 and the MX / NVFP4 recipes; telemetry only at the
# last step. s7_c (one graph): bf16 35.3, sim:E4M3 39.7, sim:E8M3 40.4 ms; sim:mxfp8 did not compile in 190 s.
# device command: bash jobs/gpu/s8_3.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 440 python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 --steps 16 --warmup 6 \
  --plain none --set train.telemetry_interval=1000 --set numerics.base=bf16 --set train.compile_scope=blocks \
  --backends bf16,sim:mxfp8,sim:E4M3,sim:nvfp4 \
  --json $OUT/gpt2_blocks.json > $OUT/gpt2_blocks.txt 2>&1
echo "gpt2 blocks rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| gpt2" $OUT/gpt2_blocks.txt | cut -c1-300
