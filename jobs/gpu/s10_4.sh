# Session 10, call 4 (issue 14): s10_3 found every stage of the MX quantizer right when compiled alone on CUDA;
# jobs/gpu/mx_fusion_diag.py compiles groups of operands in one graph and the probe, under Inductor options.
# device command: bash jobs/gpu/s10_4.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 420 python3 jobs/gpu/mx_fusion_diag.py 2>&1 | grep -v "^W1\|Warning" | tee $OUT/mx_fusion_diag.txt
echo "done $(( $(date +%s) - T0 )) s"
