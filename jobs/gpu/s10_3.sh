# Session 10, call 3 (issue 14): s10_2 found Inductor's sim:mxfp8 operand != eager on CUDA (all probe gradient
# entries differ; mxfp4 right). jobs/gpu/mx_diag.py compiles each stage of the MX quantizer alone.
# device command: bash jobs/gpu/s10_3.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 400 python3 jobs/gpu/mx_diag.py mxfp8 mxfp4 mxfp8_e5m2 2>&1 | grep -v "^W1\|Warning" | tee $OUT/mx_diag.txt
echo "done $(( $(date +%s) - T0 )) s"
