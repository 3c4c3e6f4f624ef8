# Prepared in session 6 for the next GPU call (issues 13, 14). (1) Why a simulated step costs 1.2-1.3x a bf16 step
# at llama-20m although its kernels take 4.5 of 14-16 ms: bf16 vs sim:E4M3 through both loops with the kernel
# profile (now with kernels per step) and the host profile, side by side. (2) sim:fp8_tensorwise beside torchao's
# fp8, same seed (the pair runs first; the JSON is written after every run).
# device command: bash jobs/gpu/next_s7.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 300 python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 --steps 24 --warmup 10 \
  --set numerics.base=bf16 --backends bf16,sim:E4M3 --plain all --profile --host-profile \
  --json $OUT/llama_profile.json > $OUT/llama_profile.txt 2>&1
echo "profile rc=$? $(( $(date +%s) - T0 )) s"; sed -n "/^| preset | backend | robustprec/,\$p" $OUT/llama_profile.txt | cut -c1-400 | head -40
timeout $(( 570 - $(date +%s) + T0 )) python3 benchmarks/fp8_agreement.py --preset llama-20m --steps 100 \
  --seq-len 256 --batch 32 --json $OUT/fp8_agreement.json > $OUT/fp8_agreement.txt 2>&1
echo "agreement rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[fp8\|^| " $OUT/fp8_agreement.txt
