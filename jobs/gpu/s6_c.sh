# Session 6, device call 3 (issues 14, 13): sim:fp8_tensorwise beside torchao's real fp8 on the same seed (loss
# curves, with the bf16 compiled-vs-eager noise floor); the kernel profile of sim:E4M3 at llama-20m; recipe step
# times (mxfp8, nvfp4) at llama-20m.
# device command: bash jobs/gpu/s6_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 200 python3 benchmarks/fp8_agreement.py --preset llama-20m --steps 100 --seq-len 256 --batch 32 \
  --json $OUT/fp8_agreement.json > $OUT/fp8_agreement.txt 2>&1
echo "agreement rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[fp8\|^| " $OUT/fp8_agreement.txt
B="--presets llama-20m --seq-len 256 --batch 32 --steps 24 --warmup 10 --set numerics.base=bf16 --plain none"
timeout 100 python3 benchmarks/throughput.py $B --backends sim:E4M3 --profile --json $OUT/e4m3_profile.json \
  > $OUT/e4m3_profile.txt 2>&1
echo "profile rc=$? $(( $(date +%s) - T0 )) s"; sed -n "/^profile,/,\$p" $OUT/e4m3_profile.txt | cut -c1-900 | head -12
timeout $(( 470 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $B --backends sim:mxfp8,sim:nvfp4 \
  --json $OUT/recipes.json > $OUT/recipes.txt 2>&1
echo "recipes rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/recipes.txt
