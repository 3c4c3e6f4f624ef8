# Session 8, call 1. Issue 16: llama-20m bf16 searched adaptively beside a full grid of the same LR range (eager,
# 8 trials per GPU) and, at the same time in a second process (loss curves only: no timing is read from this part),
# issue 14's sim:fp8_tensorwise beside torchao's fp8 on one seed. Then, alone on the GPU, issue 13's fp32 backend
# beside sim:E8M23 (fp32 base) at llama-20m.
# device command: bash jobs/gpu/s8_1.sh   (carry [".gpu"]; results in $OUT)
# As run: Ray could not start (its stripped binaries had lost their exec bit; s8_4.sh sets it) and the agreement
# finished only its first run in 330 s (the sim recipe compiled as one graph, with a counting graph; fp8_agreement.py
# now compiles block by block and reads telemetry at the last step only).
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 330 python3 benchmarks/adaptive_eta_c.py --preset llama-20m --format bf16 --lo 0.003 --hi 1 \
  --grid-points 8 --seeds 2 --coarse-points 3 --seeds-per-point 2 --max-trials 12 --target 1.5 --steps 200 \
  --device cuda --set train.seq_len=256 --set train.micro_batch_size=32 --set train.global_batch_size=32 \
  --set train.compile=false --set 'sweep.resources={GPU: 0.125, CPU: 1}' --out $OUT/sweeps \
  --json $OUT/adaptive.json > $OUT/adaptive.txt 2>&1 &
A=$!
timeout 330 python3 benchmarks/fp8_agreement.py --preset llama-20m --steps 100 --seq-len 256 --batch 32 \
  --json $OUT/fp8_agreement.json > $OUT/fp8_agreement.txt 2>&1 &
F=$!
wait $A; echo "adaptive rc=$? $(( $(date +%s) - T0 )) s"
wait $F; echo "agreement rc=$? $(( $(date +%s) - T0 )) s"
tail -12 $OUT/adaptive.txt; grep "^\[fp8\|^| " $OUT/fp8_agreement.txt
rm -rf $OUT/sweeps/*/*/checkpoint* 2>/dev/null
timeout $(( 540 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 20 --warmup 8 --plain none --set train.telemetry_interval=1000 --backends fp32,sim:E8M23 \
  --json $OUT/fp32_e8m23.json > $OUT/fp32_e8m23.txt 2>&1
echo "fp32/E8M23 rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama" $OUT/fp32_e8m23.txt | cut -c1-300
