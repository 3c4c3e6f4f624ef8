# Session 10, call 5 (issue 14): sim:mxfp8's compiled probe was wrong in s10_2 (after mxfp4 and nvfp4 in the same
# process) and right in s10_4 (first in its process); mxfp4's was wrong in s10_1 after E4M3 and mxfp8. Is it
# Inductor's caches? s10_2's sequence again on a fresh machine, then with every Inductor cache disabled.
# device command: bash jobs/gpu/s10_5.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
SEQ="sim:mxfp4 sim:mxfp4:base=fp32 sim:nvfp4 sim:mxfp8"
echo "== caches on"
timeout 200 python3 jobs/gpu/probe_noise.py $SEQ 2>&1 | grep -v "^W1\|Warning" | tee $OUT/caches_on.txt
echo "== caches off $(( $(date +%s) - T0 )) s"
TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 timeout $(( 400 - $(date +%s) + T0 )) python3 jobs/gpu/probe_noise.py $SEQ 2>&1 \
  | grep -v "^W1\|Warning" | tee $OUT/caches_off.txt
echo "done $(( $(date +%s) - T0 )) s"
