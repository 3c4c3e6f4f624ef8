# Prepared in session 8 (issue 14): sim:fp8_tensorwise beside torchao's fp8 on one seed (block by block, telemetry at
# the last step: s8_1 finished only the fp8 run in 330 s with one graph), then llama-20m recipe rows block by block.
# device command: bash jobs/gpu/next_s9_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 300 python3 benchmarks/fp8_agreement.py --preset llama-20m --steps 100 --seq-len 256 --batch 32 \
  --json $OUT/fp8_agreement.json > $OUT/fp8_agreement.txt 2>&1
echo "agreement rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[fp8\|^| " $OUT/fp8_agreement.txt
timeout $(( 560 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 20 --warmup 8 --plain none --set train.telemetry_interval=1000 --set numerics.base=bf16 \
  --set train.compile_scope=blocks --backends bf16,sim:E4M3,sim:mxfp8,sim:nvfp4,sim:fp8_tensorwise,sim:fp8_block \
  --json $OUT/llama_blocks.json > $OUT/llama_blocks.txt 2>&1
echo "llama blocks rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/llama_blocks.txt | cut -c1-200
