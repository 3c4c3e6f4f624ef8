# As run in session 12 (s12_1, H200, 517 s): contention probe, then the packed sweep FAILED (one trial errored, its
# reason not printed; and the sweep trained `tiny`: configs/smoke.yaml sweeps its own sweep.models, which
# model.preset did not override, so every packing figure of sessions 10-11 was of tiny trials), then the llama row.
# Prepared in session 11 (issues 13, 14). (0) jobs/gpu/contention_probe.py: one sync, llama-20m's parameters
# copied one by one and at once, and a trial's start-up phases, with 0 and with 7 busy processes on the GPU
# (hypothesis: a time-sliced GPU makes every start-up sync wait for the process's next slice). (1) The packed sweep
# at 2,000 steps with 24 trials (three waves of 8): in s11_3 the first 8 trials started in 0.7-0.85 s and the later
# 8, each beside 7 running trials, in 10.9-17.4 s; every summary now splits its start-up (startup_phases_s) and
# packing.py prints the medians of the first and the later trials. (2) llama-20m as one graph:
# sim:E4M3:scaling=tensor (never finished compiling in a call's time so far), bf16 and sim:E4M3 beside it.
# device command: bash jobs/gpu/s12_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 100 python3 jobs/gpu/contention_probe.py --busy 7 --preset llama-20m > $OUT/contention.txt 2>&1
echo "contention rc=$? $(( $(date +%s) - T0 )) s"; grep "^|" $OUT/contention.txt
timeout 240 python3 benchmarks/packing.py --preset llama-20m --formats bf16 --trials 24 --per-gpu 8 --steps 2000 \
  --seq-len 256 --batch 32 --device cuda --out /tmp/packing --json $OUT/packing.json > $OUT/packing.txt 2>&1
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep "^|\|^settings" $OUT/packing.txt
timeout $(( 565 - $(date +%s) + T0 )) python3 benchmarks/throughput.py --presets llama-20m --seq-len 256 --batch 32 \
  --steps 20 --warmup 8 --plain none --set train.telemetry_interval=1000 --set numerics.base=bf16 \
  --backends bf16,sim:E4M3,sim:E4M3:scaling=tensor --json $OUT/llama.json > $OUT/llama.txt 2>&1
echo "llama rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^note" $OUT/llama.txt | cut -c1-250
