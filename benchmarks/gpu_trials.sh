#!/usr/bin/env bash
# On a lent 2-GPU machine (after `source .gpu/install.sh`): a gpt2-124m bf16 trial on 2 Ray Train workers with
# ZeRO-3, the same trial on 1 GPU (direct and Ray Train), then trial start-up overhead per launcher.
set -u
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
nvidia-smi -L
COMMON=(--config configs/smoke.yaml --set model.preset=gpt2-124m --set numerics.backend=bf16
  --set train.seq_len=1024 --set train.micro_batch_size=8 --set train.global_batch_size=32 --set train.steps=40
  --set train.eval_interval=20 --set train.eval_sequences=32 --set train.sharpness.sequences=32
  --set train.checkpoint_interval=20 --set optim.lr=6e-4 --set "sweep.resources={CPU: 4}")
summary() {
  python3 - "$1" "$2" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[2]}/summary.json"))
print(f"{sys.argv[1]:<28} {s['status']:9s} world={s['world_size']} zero={s['zero_stage']} "
      f"tok/s={s['tokens_per_s']:,.0f} per-GPU={s['tokens_per_s_per_device']:,.0f} mfu={s['mfu']:.3f} "
      f"startup={s['startup_s']:.1f}s final_eval={s['final_eval_loss']:.4f} wall={s['wall_time_s']:.1f}s")
PY
}
run() {  # name, extra args...
  local name=$1; shift
  python3 -m robustprec train "${COMMON[@]}" "$@" --out /tmp/runs/$name --overwrite > /tmp/run-$name.log 2>&1 \
    && summary "$name" /tmp/runs/$name || { echo "FAILED $name"; tail -30 /tmp/run-$name.log; }
}
run zero3-2gpu-ray --set train.zero_stage=3 --workers 2 --gpu
run zero3-1gpu-ray --set train.zero_stage=3 --set train.launcher=ray --workers 1 --gpu
run zero0-1gpu-direct --set train.zero_stage=0 --workers 1 --gpu
run zero3-1gpu-direct --set train.zero_stage=3 --workers 1 --gpu
timeout 300 python3 benchmarks/trial_startup.py --device cuda --repeats 2 --preset nano --steps 5 2>&1 \
  | grep -E "^(ray.init|launcher|ray-|in-process)" 
