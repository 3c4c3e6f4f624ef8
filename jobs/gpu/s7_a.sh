# Session 7, device call 1 (issue 13): llama-20m bf16 vs sim:E4M3 compiled as before (kernel profile with kernels
# per category) and with train.compile_mode=reduce-overhead (CUDA graphs: a launch-bound step's host cost gone);
# then the CUDA test that CUDA graphs give the compiled curve.
# device command: bash jobs/gpu/s7_a.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
B="--presets llama-20m --seq-len 256 --batch 32 --steps 24 --warmup 10 --set numerics.base=bf16 --plain none"
timeout 230 python3 benchmarks/throughput.py $B --backends bf16,sim:E4M3 --profile --json $OUT/default.json \
  > $OUT/default.txt 2>&1
echo "default rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^\[profile" $OUT/default.txt | cut -c1-600
timeout $(( 400 - $(date +%s) + T0 )) python3 benchmarks/throughput.py $B --backends bf16,sim:E4M3 \
  --set train.compile_mode=reduce-overhead --json $OUT/graphs.json > $OUT/graphs.txt 2>&1
echo "graphs rc=$? $(( $(date +%s) - T0 )) s"; grep "^\[throughput\|^| llama\|Error\|skipping cudagraphs" $OUT/graphs.txt | head -12
timeout $(( 575 - $(date +%s) + T0 )) python3 -m pytest -q -p no:cacheprovider -rf -x \
  "tests/test_cuda_trainer.py::test_cuda_graphs_give_the_compiled_curve" > $OUT/cuda.txt 2>&1
echo "tests rc=$? $(( $(date +%s) - T0 )) s"; grep -E "passed|failed|^FAILED|^E " $OUT/cuda.txt | head -12
