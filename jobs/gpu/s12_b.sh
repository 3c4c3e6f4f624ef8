# As run in session 12 (s12_2, H200, 57 s).
# Prepared in session 11 (issue 14). Per gpt2 MLP (s11_4) sim:fp8_tensorwise took 1.74x bf16, two per-tensor amax
# kernels costing 388 us each where reading the 16,384 x 3,072 float32 tensor once takes ~40 us; sim:mxfp8 1.90x
# (block-amax reductions 130-165 us). Inductor's generated code for both, to see what those reductions read and
# write (layout, fused bit operations), and the probe's tables again beside it.
# device command: bash jobs/gpu/s12_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
for b in sim:fp8_tensorwise sim:mxfp8; do
  TORCH_LOGS=output_code timeout 150 python3 jobs/gpu/recipe_mlp_probe.py bf16 $b > $OUT/${b#sim:}.txt 2> $OUT/${b#sim:}_code.txt
  echo "$b rc=$?"; grep "^## " $OUT/${b#sim:}.txt; gzip $OUT/${b#sim:}_code.txt
done
