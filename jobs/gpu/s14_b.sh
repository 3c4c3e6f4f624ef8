# Prepared in session 13 (issue 13); run in session 14 as s14_2 (as run: one cold import timed, then one that fills the
# PYTHONPYCACHEPREFIX cache, to leave the packed sweep its time). Its first run (s14_2) found PYTHONDONTWRITEBYTECODE=1
# in the machine's environment (so nothing was cached: the fill wrote nothing) and Ray's binaries without their
# execute bits (this session's bundle): the sweep could not start Ray. Second run (s14_3): chmod, PYTHONDONTWRITEBYTECODE
# unset for the fill and the sweep, a cached import timed. s13_1's start-up profile of a fresh llama-20m trial process: 1,396 modules
# compiled from source (builtins.compile 7.8 s of 16.5 s under cProfile; torch.distributed.fsdp 6.0 s and Triton's
# kernel wrapper 6.0 s to import): torch's, sympy's, and the bundle's (installed with --no-compile); if no cached
# bytecode is usable, every fresh trial process (the first wave of a packed sweep: engine 6.9 s, s12_4) compiles
# it again. (1) Is it so: can the torch folder (and /tmp/site) be written, is PYTHONDONTWRITEBYTECODE set, and how
# long is a first vs a second import? (2) s12_4's
# packed sweep (24 x 1,500 steps, 89.5% of the ceiling) again with a writable bytecode cache filled before it
# (PYTHONPYCACHEPREFIX): the first wave's start-up and packed / ceiling, side by side with s12_4.
# device command: bash jobs/gpu/s14_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
chmod +x /tmp/site/ray/core/src/ray/gcs/gcs_server /tmp/site/ray/core/src/ray/raylet/raylet
T0=$(date +%s)
python3 -c "import importlib.util as u, os; d = os.path.dirname(u.find_spec('torch').origin)  # torch not imported
print('torch folder writable:', os.access(d, os.W_OK), '| /tmp/site writable:', os.access('/tmp/site', os.W_OK),
      '| PYTHONDONTWRITEBYTECODE:', os.environ.get('PYTHONDONTWRITEBYTECODE'))"
IMPORTS="import torch, torch._dynamo, torch.distributed.fsdp, deepspeed, ray.tune, robustprec.train.loop"
echo "cold import: 16.92 s in s14_2, not repeated"
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache
for i in cache-fill cached; do /usr/bin/time -f "$i import (PYTHONPYCACHEPREFIX) %e s" python3 -c "$IMPORTS" 2>&1 | tail -1; done
timeout $(( 550 - $(date +%s) + T0 )) python3 benchmarks/packing.py --preset llama-20m --formats bf16 --trials 24 \
  --per-gpu 8 --steps 1500 --seq-len 256 --batch 32 --device cuda --out /tmp/packing --json $OUT/packing.json \
  > $OUT/packing.txt 2> $OUT/packing_err.txt
echo "packing rc=$? $(( $(date +%s) - T0 )) s"; grep "^|\|^settings" $OUT/packing.txt; grep "^warning\|failed" $OUT/packing_err.txt | cut -c1-300
