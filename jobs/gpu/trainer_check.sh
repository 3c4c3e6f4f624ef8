# Run on the lent GPU machine from the repo root, with the bundle carried as .gpu (../shared/gpu/make-bundle .gpu);
# results go to $OUT. Issue 12 check: the cuda-marked trainer tests (fp16 forced overflow, fp16 vs fp32, fp8,
# compiled bf16), then robustprec vs the plain loop at gpt2-124m bf16 (seq 1024, batch 16, compiled).
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
nvidia-smi -L
T0=$(date +%s)
timeout 240 python3 -m pytest -q -m cuda -p no:cacheprovider ${CUDA_TESTS:-tests} > $OUT/cuda_tests.txt 2>&1
echo "cuda tests rc=$? $(( $(date +%s) - T0 )) s"; tail -25 $OUT/cuda_tests.txt
timeout $(( 560 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets gpt2-124m --backends ${BACKENDS:-bf16} \
  --seq-len 1024 --batch 16 --steps 20 --json $OUT/gpt2-124m.json > $OUT/gpt2-124m.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"
grep -v "Warn\|warn" $OUT/gpt2-124m.txt | grep "^|\|^device\|^settings\|^note" | head -20
