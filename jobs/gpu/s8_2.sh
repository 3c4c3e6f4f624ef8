# Session 8, call 2 (issues 14, 13): recipe and ExMy step times beside bf16 at llama-20m, seq 256, batch 32, compiled,
# numerics.base=bf16, telemetry only at the last step (no counting graph in the timed window). One bf16 row per call.
# device command: bash jobs/gpu/s8_2.sh   (carry [".gpu"]; results in $OUT)
# As run: 550 s gave bf16 and sim:mxfp8 only (sim:mxfp8 first step 106 s; sim:nvfp4 did not finish compiling).
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 550 python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 --steps 20 --warmup 8 \
  --plain none --set train.telemetry_interval=1000 --set numerics.base=bf16 \
  --backends bf16,sim:mxfp8,sim:nvfp4,sim:fp8_tensorwise,sim:fp8_block,sim:mxfp4,sim:E5M2,sim:E4M3:scaling=tensor,sim:E8M10 \
  --json $OUT/llama_rows.json > $OUT/llama_rows.txt 2>&1
echo "llama rows rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama" $OUT/llama_rows.txt | cut -c1-300
