# Session 8, call 4 (issue 16): llama-20m bf16, adaptive beside a full grid of the same LR range (eager, 8 trials per
# GPU). The bundle has no MLflow: the records come back as a tarball (no checkpoints) to sync and analyze here.
# The Ray binaries of the stripped bundle lost their exec bit in the tarball: set it first.
# device command: bash jobs/gpu/s8_4.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
find /tmp/site/ray/core -type f -size +1M -exec chmod a+x {} \;
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 420 python3 benchmarks/adaptive_eta_c.py --preset llama-20m --format bf16 --lo 0.003 --hi 1 \
  --grid-points 8 --seeds 2 --coarse-points 3 --seeds-per-point 2 --max-trials 12 --target 1.5 --steps 200 \
  --device cuda --set train.seq_len=256 --set train.micro_batch_size=32 --set train.global_batch_size=32 \
  --set train.compile=false --set 'sweep.resources={GPU: 0.125, CPU: 1}' --out /tmp/sweeps \
  --json $OUT/adaptive.json > $OUT/adaptive.txt 2>&1
echo "adaptive rc=$? $(( $(date +%s) - T0 )) s"; grep -v "WARNING\|INFO" $OUT/adaptive.txt | tail -8
tar czf $OUT/sweeps.tgz --exclude='checkpoint*' -C /tmp sweeps && ls -la $OUT
