# Session 10, call 2 (issues 13, 14). s10_1 (next_s10_a.sh) failed two CUDA tests: the sim:mxfp4 compile probe
# (compiled vs eager 0.095 of the gradients' norm, tolerance 0.05) and fp8_tensorwise's compiled operand (a
# recompile made the plan's ints symbolic). (1) The new recipe-operand test (compiled = CUDA eager = CPU, bits) and
# the fixed tensorwise test. (2) jobs/gpu/probe_noise.py: the probe's gradients compiled, aot_eager, CUDA eager and
# CPU eager, so the compiled error can be set against the noise of two correct executions.
# device command: bash jobs/gpu/s10_2.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 200 python3 -m pytest tests/test_cuda_numerics.py -m cuda -q -rfE -p no:cacheprovider \
  -k "recipe_operands_compiled or torchaos" > $OUT/tests.txt 2>&1
echo "tests rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^DEBUG" $OUT/tests.txt | grep -E "^E  |passed|failed" | head -30
timeout $(( 540 - $(date +%s) + T0 )) python3 jobs/gpu/probe_noise.py sim:mxfp4 sim:mxfp4:base=fp32 sim:nvfp4 \
  sim:mxfp8 sim:mxfp4:scale=floor 2>&1 | grep -v "^W1\|Warning" | tee $OUT/probe_noise.txt
echo "done $(( $(date +%s) - T0 )) s"
