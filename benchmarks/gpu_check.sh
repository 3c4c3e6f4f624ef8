#!/usr/bin/env bash
# On the lent GPU machine (after `source .gpu/install.sh`): every backend trains a short nano run, then the trainer
# throughput benchmark (benchmarks/throughput.py) at gpt2-124m (seq 1024), eager, then compiled with a kernel profile
# and the independent GPT-2. Prints one line per backend and the tables.
set -u
export PYTHONUNBUFFERED=1
nvidia-smi -L
for b in fp32 bf16 fp16 fp8 sim:E4M3 sim:E5M2; do
  python3 -m robustprec train --config configs/smoke.yaml --set model.preset=nano --set numerics.backend=$b \
    --set train.steps=60 --set train.threads=8 --out /tmp/runs/$b --overwrite > /tmp/run-$b.log 2>&1 \
    || { echo "FAILED $b"; tail -20 /tmp/run-$b.log; continue; }
  python3 - "$b" <<'PY'
import json, sys
b = sys.argv[1]
s = json.load(open(f"/tmp/runs/{b}/summary.json"))
print(f"{b:10s} {s['status']:9s} final_eval={s['final_eval_loss']:.4f} tok/s={s['tokens_per_s']:,.0f} "
      f"wall={s['wall_time_s']:.1f}s numerics={s['numerics']}")
PY
done
timeout 200 python3 benchmarks/throughput.py --presets gpt2-124m --backends bf16,fp8,fp32 --steps 20 --seq-len 1024 \
  --batch 16 --no-compile 2>&1 | grep -v Warn | sed -n '/^device:/,$p'
timeout 480 python3 benchmarks/throughput.py --presets gpt2-124m --backends bf16,fp8 --steps 30 --seq-len 1024 \
  --batch 16 --profile --reference-gpt 2>&1 | grep -v Warn | sed -n '/^device:/,$p'
