# Prepared in session 12 (issue 14). Recipe step time at gpt2-124m (seq 1024, batch 16), block by block with the
# head compiled (s8_3, head eager: sim:mxfp8 1.37x, sim:nvfp4 1.83x), with Inductor's defaults and with
# train.compile_options={realize_opcount_threshold: 1000} (on CPU it removes the int32 intermediates that split
# each MX quantization into two kernels; next_s13_a.sh measures the MLP probe first).
# As run (s13_2, 514 s): after s13_1 showed realize_opcount_threshold=1000 left the MLP probe's mxfp8 kernel total unchanged
# (1,983 -> 1,984 us) while aggressive_fusion=True cut it to 1,849 us, the second sweep uses aggressive_fusion.
# device command: bash jobs/gpu/s13_c.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
S="--presets gpt2-124m --seq-len 1024 --batch 16 --steps 16 --warmup 6 --plain none --set numerics.base=bf16
   --set train.telemetry_interval=1000 --set train.compile_scope=blocks"
timeout 280 python3 benchmarks/throughput.py $S --backends bf16,sim:mxfp8,sim:fp8_tensorwise,sim:nvfp4 \
  --json $OUT/gpt2.json > $OUT/gpt2.txt 2>&1
echo "default rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2.txt | cut -c1-200
timeout $(( 570 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $S \
  --set "train.compile_options={aggressive_fusion: true}" --backends bf16,sim:mxfp8,sim:fp8_tensorwise,sim:nvfp4 \
  --json $OUT/gpt2_aggressive.json > $OUT/gpt2_aggressive.txt 2>&1
echo "aggressive rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/gpt2_aggressive.txt | cut -c1-200
