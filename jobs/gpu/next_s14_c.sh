# Prepared in session 13 (issue 14). Is aggressive_fusion a safe default for the recipes? At gpt2-124m block by
# block (s13_2) it built sim:mxfp8 where Triton could not build the default kernels, and per gpt2 MLP (s13_1) it
# took 7% off sim:mxfp8's kernels. (1) The CUDA suite with it set in Inductor's config for every compile of the tests. (2) llama-20m as one graph, recipes with the defaults and with it, bf16 beside.
# device command: bash jobs/gpu/next_s14_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 380 python3 -c "import sys, pytest, torch._inductor.config as c; c.aggressive_fusion = True
sys.exit(pytest.main(['tests/test_cuda_numerics.py', '-m', 'cuda', '-q', '-rfE', '-p', 'no:cacheprovider']))" \
  > $OUT/suite_aggressive.txt 2>&1
echo "suite (aggressive_fusion) rc=$? $(( $(date +%s) - T0 )) s"; grep "passed\|failed\|FAILED\|ERROR" $OUT/suite_aggressive.txt | tail -8
S="--presets llama-20m --seq-len 256 --batch 32 --steps 16 --warmup 6 --plain none --set numerics.base=bf16
   --set train.telemetry_interval=1000"
for opt in "{}" "{aggressive_fusion: true}"; do
  timeout $(( 590 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $S --set "train.compile_options=$opt" \
    --backends bf16,sim:fp8_tensorwise,sim:mxfp8 > $OUT/llama_recipes.txt 2>&1
  echo "$opt rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|ConfigError" $OUT/llama_recipes.txt | cut -c1-220
done
