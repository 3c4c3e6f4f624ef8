# Run on the lent GPU machine from the repo root, with the bundle carried as .gpu (../shared/gpu/make-bundle .gpu)
# and, for the study, .data/tinyshakespeare.txt; results go to $OUT (the device tool brings them back).
# Throughput call (issue 7): robustprec vs the plain loop, gpt2-124m then llama-350m, bf16 and fp8, compiled.
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
nvidia-smi -L

T0=$(date +%s)
timeout 200 python3 benchmarks/throughput.py --presets gpt2-124m --backends bf16,fp8 --seq-len 1024 --batch 16 \
  --steps 20 --profile --reference-gpt --json $OUT/gpt2-124m.json > $OUT/gpt2-124m.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"
grep -v "Warn\|warn" $OUT/gpt2-124m.txt | grep "^|\|^device\|^settings\|^note\|^profile" | head -30
timeout $(( 545 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-350m --backends bf16,fp8 \
  --seq-len 1024 --batch 16 --steps 20 --profile --json $OUT/llama-350m.json > $OUT/llama-350m.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"
grep -v "Warn\|warn" $OUT/llama-350m.txt | grep "^|\|^device\|^settings\|^note\|^profile" | head -30
tail -5 $OUT/llama-350m.txt
