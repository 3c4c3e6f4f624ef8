# Session 9 (issues 13, 14), after s9_3 (probe_diag: Triton fails on the MX kernel with counters at 128 tokens only;
# nvfp4's largest-entry error 0.033-0.078). (1) The trainer's compile probe (2048 tokens, ReLU, norm-relative error)
# for the recipes that failed in s9_2. (2) The packed study-style sweep (issue 13 item 5).
# device command: bash jobs/gpu/s9_4.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 80 python3 -m pytest tests/test_cuda_numerics.py -m cuda -q -rfE -p no:cacheprovider \
  -k "probe and (mxfp8 or mxfp4 or nvfp4)" > $OUT/probe_tests.txt 2>&1
echo "probe tests rc=$? $(( $(date +%s) - T0 )) s"; tail -4 $OUT/probe_tests.txt
timeout $(( 325 - $(date +%s) + T0 )) python3 benchmarks/packing.py --preset llama-20m --formats bf16,sim:E4M3 \
  --trials 16 --per-gpu 8 --steps 200 --seq-len 256 --batch 32 --device cuda --out /tmp/packing \
  --json $OUT/packing.json > $OUT/packing.txt 2>&1
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^\[rank\|^W1\|^(" $OUT/packing.txt | tail -14
