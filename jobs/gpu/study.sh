# Run on the lent GPU machine from the repo root, with the bundle carried as .gpu (../shared/gpu/make-bundle .gpu)
# and, for the study, .data/tinyshakespeare.txt; results go to $OUT (the device tool brings them back).
# One device call of the study: install the bundle, (re)start the sweep for at most $1 seconds, ship the records back.
LIMIT=${1:-500}
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
chmod +x /tmp/site/ray/core/src/ray/gcs/gcs_server /tmp/site/ray/core/src/ray/raylet/raylet
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
nvidia-smi -L
rm -rf sweeps/study-ladder/tune   # a call cut short leaves Tune state mid-write; the records alone say what is left
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 10 > $OUT/smi.csv 2>&1 &
SMI=$!
T0=$(date +%s)
timeout -s INT -k 40 $LIMIT python3 jobs/sweep.py --config configs/study-ladder.yaml --storage sweeps \
  --name study-ladder > $OUT/sweep.txt 2>&1
echo "rc=$? after $(( $(date +%s) - T0 )) s"
kill $SMI 2>/dev/null
ray stop --force > /dev/null 2>&1
grep -v "^\s*$" $OUT/sweep.txt | grep -v "WARNING\|Warn\|INFO\|─" | grep -v "^llama-20m" | tail -12
python3 - <<'PY'
import json, glob, collections
c = collections.Counter(); tps = collections.defaultdict(list)
for f in glob.glob("sweeps/study-ladder/trials/*/summary.json"):
    s = json.load(open(f)); fmt = s["name"].split("-")[2]
    c[(fmt, s["status"])] += 1
    if s.get("tokens_per_s"): tps[fmt].append(s["tokens_per_s"])
for k in sorted(c): print(k, c[k])
for k in sorted(tps): print(k, "tok/s median %.0f" % sorted(tps[k])[len(tps[k]) // 2])
PY
tar --exclude=tune --exclude=checkpoints -czf $OUT/sweep.tgz sweeps/study-ladder 2>/dev/null; ls -la $OUT/sweep.tgz
