# Prepared in session 13 (not run in 14; renamed) (issue 14). llama-20m as one graph, recipes with Inductor's defaults and with
# aggressive_fusion (s13: at gpt2-124m only aggressive_fusion built sim:mxfp8), bf16 beside them in each process.
# device command: bash jobs/gpu/next_s15_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache  # the machine sets it (s14_2)
T0=$(date +%s)
S="--presets llama-20m --seq-len 256 --batch 32 --steps 16 --warmup 6 --plain none --set numerics.base=bf16
   --set train.telemetry_interval=1000"
END=270
for opt in "{}" "{aggressive_fusion: true}"; do
  timeout $(( END - $(date +%s) + T0 )) python3 benchmarks/throughput.py $S --set "train.compile_options=$opt" \
    --backends bf16,sim:fp8_tensorwise,sim:mxfp8 > $OUT/llama_recipes_$END.txt 2>&1
  echo "$opt rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|ConfigError" $OUT/llama_recipes_$END.txt | cut -c1-220
  END=555
done
