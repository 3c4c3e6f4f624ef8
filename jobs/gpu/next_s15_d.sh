# Prepared in session 13 (not run in 14; renamed) (issue 14). Where the recipes' bytes go, kernel by kernel. A traffic floor for block
# recipes at gpt2-124m (every activation and gradient copy: read bf16 once, write bf16 once; docs/benchmarks.md,
# session 13) is about 1.15x bf16, and the measured steps are 1.46-2.62x: the quantization kernels move several
# times the bytes they must (session 12's code listing: int32 intermediates, an input read twice). Inductor's
# profile_bandwidth benchmarks every generated kernel and writes its time, bytes and GB/s; one process per backend
# (each call of a compiled graph appends its kernels, slowest first, to the process's file), gpt2 MLP, 16,384 tokens;
# for mxfp8 also aggressive_fusion, and both of Inductor's realization thresholds for GPUs raised (s13_3's kernels of
# gpt2 sim:mxfp8 wrote each quantized element as int32 bits, 4 bytes, and its bf16 carrier in another kernel; the
# opcount threshold alone changed nothing in s13_1, and a pointwise node with over 8 reads is realized too).
# With profile_bandwidth, Inductor times each Triton kernel on its first call and does not launch it again: only the
# bw_*.txt files mean anything (bytes are the kernel's tensor arguments' sizes, an estimate), not the probe's lines.
# s14_1 ran this for sim:mxfp8 alone, stderr to /dev/null: it exited 1, reason not kept.
# Timeouts count from after the bundle's install (~25 s on a fresh machine).
# device command: bash jobs/gpu/next_s15_d.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 TORCHINDUCTOR_FX_GRAPH_CACHE=0
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache  # the machine sets it (s14_2)
T0=$(date +%s)
for run in bf16: sim:fp8_tensorwise: sim:mxfp8: sim:mxfp8:aggressive_fusion=True, \
    sim:mxfp8:realize_opcount_threshold=1000,realize_acc_reads_threshold=1000, sim:nvfp4:; do
  backend=${run%:*}; extra=${run##*:}; tag=$(echo "$backend$extra" | tr ':=,' '___')
  timeout $(( 555 - $(date +%s) + T0 )) python3 jobs/gpu/recipe_mlp_probe.py \
    --inductor "${extra}profile_bandwidth=True,profile_bandwidth_output='$OUT/bw_$tag.txt'" $backend > $OUT/probe_$tag.txt 2>&1
  echo "$backend $extra rc=$? $(( $(date +%s) - T0 )) s"; grep "^## \|all kernels" $OUT/probe_$tag.txt
  grep -c "^SUMMARY\|^TRITON" $OUT/bw_$tag.txt 2>/dev/null; head -8 $OUT/bw_$tag.txt 2>/dev/null | cut -c1-200
done
