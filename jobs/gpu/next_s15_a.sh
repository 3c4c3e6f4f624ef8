# Prepared in session 13 (not run in 14; renamed) (issue 14). Is aggressive_fusion a safe default for the recipes, and what made Triton fail?
# At gpt2-124m block by block (s13_2) aggressive_fusion built sim:mxfp8 where Triton could not build Inductor's
# default kernel (a persistent reduction named ...gelu...sum_t_view...: by its name the MLP's GELU backward, the
# bias gradient's sum over tokens and an MX copy blocked along tokens, which suggests Inductor's mix-order
# reduction), and per gpt2 MLP (s13_1) it took 7% off sim:mxfp8's kernels. (1) The CUDA suite with aggressive_fusion
# set in Inductor's config for every compile of the tests. (2) gpt2-124m blocks, sim:mxfp8 with
# triton.mix_order_reduction=False: does the default fusion build without the mix-order kernel, and how fast?
# device command: bash jobs/gpu/next_s15_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache  # the machine sets it (s14_2)
T0=$(date +%s)
timeout 370 python3 -c "import sys, pytest, torch._inductor.config as c; c.aggressive_fusion = True
sys.exit(pytest.main(['tests/test_cuda_numerics.py', '-m', 'cuda', '-q', '-rfE', '-p', 'no:cacheprovider']))" \
  > $OUT/suite_aggressive.txt 2>&1
echo "suite (aggressive_fusion) rc=$? $(( $(date +%s) - T0 )) s"; grep "passed\|failed\|FAILED\|ERROR" $OUT/suite_aggressive.txt | tail -8
timeout $(( 555 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 \
  --steps 12 --warmup 4 --plain none --set numerics.base=bf16 --set train.telemetry_interval=1000 \
  --set train.compile_scope=blocks --set "train.compile_options={triton.mix_order_reduction: false}" \
  --backends bf16,sim:mxfp8 > $OUT/gpt2_no_mix_order.txt 2>&1
echo "no mix-order rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|ConfigError" $OUT/gpt2_no_mix_order.txt | cut -c1-250
