# Run on the lent GPU machine from the repo root, with the bundle carried as .gpu (../shared/gpu/make-bundle .gpu)
# and, for the study, .data/tinyshakespeare.txt; results go to $OUT (the device tool brings them back).
# Refinement of the study between the last stable (0.096) and the first diverged (0.3) LR, mantissa ladder only.
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
chmod +x /tmp/site/ray/core/src/ray/gcs/gcs_server /tmp/site/ray/core/src/ray/raylet/raylet
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
T0=$(date +%s)
timeout -s INT -k 30 320 python3 jobs/sweep.py --config configs/study-ladder.yaml --storage sweeps --name study-ladder-fine \
  --set 'sweep.lrs=[0.13, 0.17, 0.22]' --set 'sweep.formats=[bf16, "sim:E8M3", "sim:E8M4", "sim:E8M5", "sim:E8M6"]' \
  --set 'sweep.axes={}' --set 'sweep.exclude=[]' > $OUT/fine.txt 2>&1
echo "rc=$? after $(( $(date +%s) - T0 )) s"
ray stop --force > /dev/null 2>&1
grep "finished in\|pending" $OUT/fine.txt | tail -2
tar --exclude=tune --exclude=checkpoints -czf $OUT/fine.tgz sweeps/study-ladder-fine
