# Session 14 (issues 13, 14), run as s14_4. (1) The recipe-operand test that s14_1 ran out of time for: every recipe's
# GEMM operand, compiled = CUDA eager = CPU's integer path, with and without counts (without, FP8 elements round
# by the float8 cast). (2) llama-20m as one graph, the rows issue 13 still lacks: sim:E8M10 (TF32 carrier), fp32 and
# sim:E8M23 beside bf16 (next_s14_b.sh of session 13).
# As run (s14_4, 302 s): as written.
# device command: bash jobs/gpu/s14_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 230 python3 -m pytest tests/test_cuda_numerics.py -m cuda -q -rfE -p no:cacheprovider -k recipe_operands \
  > $OUT/suite.txt 2>&1
echo "recipe operands test rc=$? $(( $(date +%s) - T0 )) s"; grep "passed\|failed\|FAILED\|Error" $OUT/suite.txt | tail -6 | cut -c1-400
timeout $(( 555 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 20 --warmup 8 --plain none --set train.telemetry_interval=1000 --set numerics.base=bf16 \
  --backends bf16,sim:E8M10,fp32,sim:E8M23 --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^note" $OUT/llama.txt | cut -c1-250
