# A/B of the trainer on the lent GPU (issue 12 regression hunt): robustprec vs the plain loop at llama-20m bf16 with
# this checkout and with an older checkout's package copied into .old/ (carried), recompiles/graph breaks logged,
# a kernel profile of both loops, and the fp16 ZeRO-0 forced-overflow curve. Results in $OUT.
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
ARGS="--presets llama-20m --backends bf16 --seq-len 256 --batch 32 --steps 20"
TORCH_LOGS=recompiles,graph_breaks timeout 150 python3 benchmarks/throughput.py $ARGS --profile --json $OUT/new.json > $OUT/new.txt 2>&1
echo "new rc=$? $(( $(date +%s) - T0 )) s"; grep -v "^DEBUG" $OUT/new.txt | grep "^| \|^top\|ecompil\|raph break\|triggered\|- [0-9]" | head -30
(cd .old && PYTHONPATH=$PWD:$PYTHONPATH timeout 120 python3 benchmarks/throughput.py $ARGS --json $OUT/old.json > $OUT/old.txt 2>&1)
echo "old rc=$? $(( $(date +%s) - T0 )) s"; grep "^| " $OUT/old.txt | head -4
timeout 100 python3 - > $OUT/fp16.txt 2>&1 <<'PY'
import pyarrow.parquet as pq, tempfile
from robustprec.config import load_config
from robustprec.train.loop import train
from tests.conftest import tiny_overrides
with tempfile.TemporaryDirectory() as d:
    cfg = load_config(None, tiny_overrides(**{"train.device": "cuda", "numerics.backend": "fp16", "numerics.fp16_initial_scale_power": 40, "train.telemetry_interval": 1, "train.steps": 12}))
    s = train(cfg, d + "/r")
    t = pq.read_table(d + "/r/curve.parquet").to_pydict()
    for k in ("loss", "grad_norm", "skipped_steps", "loss_scale"):
        print(k, t.get(k))
PY
echo "fp16 rc=$?"; grep -v "^\[" $OUT/fp16.txt | tail -6
