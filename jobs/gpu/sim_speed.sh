# Run on the lent GPU machine from the repo root, with the bundle carried as .gpu (../shared/gpu/make-bundle .gpu);
# results go to $OUT. Issue 13: the cuda-marked suite, then simulated formats vs bf16 through benchmarks/throughput.py
# (robustprec and the plain loop, compiled). PRESET=llama-20m (seq 256, batch 32) or gpt2-124m (seq 1024, batch 16).
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
nvidia-smi -L
T0=$(date +%s)
if [ -n "${CUDA_TESTS:-}" ]; then
  timeout 240 python3 -m pytest -q -m cuda -p no:cacheprovider $CUDA_TESTS > $OUT/cuda_tests.txt 2>&1
  echo "cuda tests rc=$? $(( $(date +%s) - T0 )) s"; grep -E "passed|failed|^FAILED|^ERROR" $OUT/cuda_tests.txt | tail -15
fi
PRESET=${PRESET:-llama-20m}
case $PRESET in
  llama-20m) GEO="--seq-len 256 --batch 32" ;;
  *) GEO="--seq-len 1024 --batch 16" ;;
esac
BACKENDS=${BACKENDS:-bf16,sim:E8M3,sim:E5M2,sim:E4M3,sim:E4M3:scaling=tensor,sim:E8M10,sim:E8M23,fp32}
timeout $(( 570 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets $PRESET --backends $BACKENDS $GEO \
  --steps ${STEPS:-20} ${PLAIN:+--plain $PLAIN} ${PROFILE:+--profile} --json $OUT/$PRESET.json > $OUT/$PRESET.txt 2>&1
echo "$PRESET rc=$? $(( $(date +%s) - T0 )) s"
grep -v "Warn\|warn" $OUT/$PRESET.txt | grep "^|\|^device\|^settings\|^note\|^top" | head -40
