# Session 7, device call 2 (issue 13): why a sim step costs ~4 ms more than bf16 at llama-20m although it launches
# fewer kernels (s7_a): a linear-stack probe (host ms to queue fwd+bwd vs wall; GEMM output and quantizer
# variants; default and CUDA-graph modes, with cudagraph skip reasons), then the trainer's host profile.
# device command: bash jobs/gpu/s7_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
TORCH_LOGS=perf_hints timeout 200 python3 jobs/gpu/linear_host_probe.py > $OUT/probe.txt 2>&1
echo "probe rc=$? $(( $(date +%s) - T0 )) s"; grep "^| \|skipping\|Error" $OUT/probe.txt | cut -c1-300 | head -20
B="--presets llama-20m --seq-len 256 --batch 32 --steps 24 --warmup 10 --set numerics.base=bf16 --plain all"
timeout $(( 560 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $B --backends bf16,sim:E4M3 --host-profile \
  --json $OUT/host.json > $OUT/host.txt 2>&1
echo "host rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput" $OUT/host.txt; sed -n "/^host time/,\$p" $OUT/host.txt | cut -c1-250 | head -80
