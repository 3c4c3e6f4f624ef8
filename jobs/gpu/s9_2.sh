# Session 9 (issues 13, 14), after s9_1 (the gpt2 blocks rows stopped at sim:mxfp8, whose compile
# probe Triton could not build; the MLP probe showed nvfp4's 16-wide RHT matmuls as FFMA GEMMs). (1) The CUDA
# numerics suite, with the trainer's compile probe per recipe. (2) The MLP probe for bf16 / nvfp4 (RHT now a
# butterfly) / fp8_tensorwise. (3) gpt2-124m block by block (head compiled, evaluation hooks no longer recompile
# per block), kernel profile per row.
# device command: bash jobs/gpu/s9_2.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 220 python3 -m pytest tests/test_cuda_numerics.py -m cuda -q -rfEs -p no:cacheprovider --durations=8 \
  > $OUT/cuda_suite.txt 2>&1
echo "cuda suite rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^DEBUG\|^  " $OUT/cuda_suite.txt | tail -25
timeout 90 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:nvfp4 sim:fp8_tensorwise > $OUT/mlp_probe.txt 2>&1
echo "mlp probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^## " $OUT/mlp_probe.txt
S="--presets gpt2-124m --seq-len 1024 --batch 16 --steps 16 --warmup 6 --plain none --set train.telemetry_interval=1000"
timeout $(( 565 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $S --set numerics.base=bf16 \
  --set train.compile_scope=blocks --profile --backends bf16,sim:mxfp8,sim:nvfp4,sim:E4M3,sim:E5M2,sim:E8M3 \
  --json $OUT/gpt2_blocks.json > $OUT/gpt2_blocks.txt 2>&1
echo "blocks rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^\[profile\|Error" $OUT/gpt2_blocks.txt | cut -c1-300
