# Prepared in session 7 for a later GPU call (issue 16): one format of llama-20m searched adaptively beside a full
# grid of the same LR range, both analyzed by robustprec analyze's own fit; eager (a compile per trial would cost
# more than the trial), 8 trials packed per GPU. Adjust --lo/--hi once a grid shows where llama-20m diverges.
# device command: bash jobs/gpu/next_s8_b.sh   (carry [".gpu"]; results in $OUT)
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout 570 python3 benchmarks/adaptive_eta_c.py --preset llama-20m --format bf16 --lo 0.003 --hi 1 \
  --grid-points 8 --seeds 2 --coarse-points 3 --seeds-per-point 2 --max-trials 12 --target 1.5 --steps 200 \
  --device cuda --set train.seq_len=256 --set train.micro_batch_size=32 --set train.global_batch_size=32 \
  --set train.compile=false --set 'sweep.resources={GPU: 0.125, CPU: 1}' --out $OUT/sweeps \
  --json $OUT/adaptive.json > $OUT/adaptive.txt 2>&1
echo "adaptive rc=$? $(( $(date +%s) - T0 )) s"; tail -15 $OUT/adaptive.txt
