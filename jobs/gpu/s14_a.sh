# Session 14 (issues 13, 14). FP8 elements now round by torch's float8 cast (`QuantPlan.native`: clamp to ±max,
# cast, read back) outside telemetry steps, where the integer rounding's intermediates were realized as int32
# buffers (s12/s13 kernel listings). (1) The CUDA tests that check it bit for bit: every format family and every
# recipe operand, compiled = CUDA eager = CPU's integer path, with and without counts; torchao's tensorwise operands.
# (2) gpt2 MLP probe, kernels' sum per fwd+bwd (s13_1 with the integer path: bf16 1,003 us, mxfp8 1,983,
# fp8_tensorwise 1,475). (3) gpt2-124m blocks with Inductor's defaults (s13_2: sim:mxfp8 failed to compile).
# (4) If time is left: Inductor's profile_bandwidth of sim:mxfp8's MLP kernels.
# As run (s14_1, 558.5 s): the tests hit their 150 s limit inside the fourth (recipe operands; three passed, it
# passed in s14_4); sim:mxfp8 failed to compile at gpt2 and sim:nvfp4 started but was killed by the time limit; (4)
# exited 1, its stderr not kept.
# device command: bash jobs/gpu/s14_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 150 python3 -m pytest tests/test_cuda_numerics.py -m cuda -q -rfE -p no:cacheprovider \
  -k "compiled_equals_eager_equals_cpu or recipe_operands or fp8_tensorwise_operands or e4m3fn" > $OUT/suite.txt 2>&1
echo "tests rc=$? $(( $(date +%s) - T0 )) s"; grep "passed\|failed\|FAILED\|ERROR" $OUT/suite.txt | tail -6 | cut -c1-300
timeout 120 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:mxfp8 sim:fp8_tensorwise sim:nvfp4 > $OUT/probe.txt 2>&1
echo "probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^## " $OUT/probe.txt
timeout $(( 500 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 \
  --steps 12 --warmup 4 --plain none --set numerics.base=bf16 --set train.telemetry_interval=1000 \
  --set train.compile_scope=blocks --backends bf16,sim:mxfp8,sim:fp8_tensorwise,sim:nvfp4 \
  --json $OUT/gpt2.json > $OUT/gpt2.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|ConfigError" $OUT/gpt2.txt | cut -c1-220
TORCHINDUCTOR_FX_GRAPH_CACHE=0 timeout $(( 570 - $(date +%s) + T0 )) python3 jobs/gpu/recipe_mlp_probe.py \
  --inductor "profile_bandwidth=True,profile_bandwidth_output='$OUT/bw_mxfp8.txt'" sim:mxfp8 > /dev/null 2>&1
echo "bandwidth rc=$? $(( $(date +%s) - T0 )) s"; head -30 $OUT/bw_mxfp8.txt 2>/dev/null | cut -c1-200
