# Prepared in session 12 (issues 13, 14). (1) The CUDA suite: session 12 changed the recipe backward (a per-tensor
# copy is quantized in its own layout, then transposed) and had no device time left to run it. (2) A fresh
# process's first start-up under cProfile (engine 6.7-6.9 s in s12_1 and s12_4; on CPU AdamW's import of
# torch._dynamo is 1.7 s of it). (3) The gpt2 MLP probe of sim:mxfp8 and
# sim:fp8_tensorwise with the total of all kernels, with Inductor's defaults and two fusion settings.
# As run (s13_1, 559 s): unchanged.
# device command: bash jobs/gpu/s13_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 400 bash jobs/gpu/cuda_suite.sh > $OUT/suite.txt 2>&1
echo "suite rc=$? $(( $(date +%s) - T0 )) s"; grep "passed\|failed\|FAILED\|ERROR" $OUT/suite.txt | tail -8
timeout 60 python3 jobs/gpu/startup_profile.py --preset llama-20m --top 40 > $OUT/startup_profile.txt 2>&1
echo "profile rc=$? $(( $(date +%s) - T0 )) s"; grep -A25 "^start-up" $OUT/startup_profile.txt | cut -c1-160
timeout 100 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:mxfp8 sim:fp8_tensorwise > $OUT/probe.txt 2>&1
echo "probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^## \|other kernels\|all kernels" $OUT/probe.txt
# Inductor split each MX quantization into a persistent reduction that writes the rounded magnitudes (int32) and a
# pointwise kernel that re-reads x for the sign: a node with several users and over 30 ops (the rounding chain) is
# realized (ir.should_realize_on_reuse). Two settings that may keep it in one kernel, side by side:
for setting in realize_opcount_threshold=1000 aggressive_fusion=True; do
  timeout $(( 575 - $(date +%s) + T0 )) python3 jobs/gpu/recipe_mlp_probe.py --inductor $setting \
    bf16 sim:mxfp8 sim:fp8_tensorwise > $OUT/probe_${setting%%=*}.txt 2>&1
  echo "$setting rc=$? $(( $(date +%s) - T0 )) s"; grep "^## \|other kernels\|all kernels" $OUT/probe_${setting%%=*}.txt
done
