# Session 11 (issue 14): where recipe time goes after the float64 divisions (recipes._div_rn), one gpt2 MLP.
# As run (s11_4, 2026-11-29; a call of its own, the command below inline, timeout 230): bf16 1.497 ms, sim:fp8_tensorwise
# 2.598, sim:nvfp4 4.403, sim:mxfp8 2.842; sim:fp8_block not reached in the time.
# device command: bash jobs/gpu/s11_d.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
timeout 230 python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:fp8_tensorwise sim:nvfp4 sim:mxfp8 sim:fp8_block \
  > $OUT/mlp_probe.txt 2>&1
echo rc=$?; grep "^## \|^|" $OUT/mlp_probe.txt | head -60
