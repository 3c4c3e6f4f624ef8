# Prepared in session 7 for the next GPU call (issue 14): sim:fp8_tensorwise beside torchao's fp8 on one seed (the
# pair runs first; JSON after every run), then recipe step times beside bf16 at llama-20m. Telemetry only at the
# last step, so that no counting graph compiles inside a timed window (66-68 s at gpt2-124m, s7_c).
# device command: bash jobs/gpu/next_s8_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 330 python3 benchmarks/fp8_agreement.py --preset llama-20m --steps 100 --seq-len 256 --batch 32 \
  --json $OUT/fp8_agreement.json > $OUT/fp8_agreement.txt 2>&1
echo "agreement rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[fp8\|^| " $OUT/fp8_agreement.txt
timeout $(( 575 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 16 --warmup 6 --plain none --set train.telemetry_interval=1000 \
  --backends bf16,sim:mxfp8,sim:nvfp4,sim:fp8_tensorwise --json $OUT/recipes.json > $OUT/recipes.txt 2>&1
echo "recipes rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/recipes.txt
