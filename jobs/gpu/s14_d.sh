# Session 14 (issue 14), run as s14_5 on the session's last 360 s. gpt2-124m blocks, head compiled, with
# aggressive_fusion (with Inductor's defaults sim:mxfp8 still does not compile, s14_1): bf16 and sim:mxfp8 with
# FP8 elements rounded by the float8 cast (s13_2, integer rounding: 36.3 / 58.6 ms, 1.61x).
# As run (s14_5, 151.5 s): as written.
# device command: bash jobs/gpu/s14_d.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 265 python3 benchmarks/throughput.py --presets gpt2-124m --seq-len 1024 --batch 16 --steps 12 --warmup 4 \
  --plain none --set numerics.base=bf16 --set train.telemetry_interval=1000 --set train.compile_scope=blocks \
  --set "train.compile_options={aggressive_fusion: true}" --backends bf16,sim:mxfp8 > $OUT/gpt2.txt 2>&1
echo "gpt2 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|ConfigError" $OUT/gpt2.txt | cut -c1-220
