# Throughput of the simulated formats against bf16 (issue 13). Run on the lent GPU machine from the repo root with
# the bundle carried as .gpu (../shared/gpu/make-bundle .gpu); results go to $OUT/<preset>-<tag>.{json,txt}.
# Each backend runs both loops with their own compiles (~1-2 min): split the list over device commands (10 min each):
#   BACKENDS=bf16,sim:E8M3,sim:E5M2,sim:E4M3 TAG=a bash jobs/gpu/sim_throughput.sh llama-20m 256 32
#   BACKENDS=bf16,sim:E4M3:scaling=tensor,sim:E8M10,sim:E8M23,fp32 TAG=b bash jobs/gpu/sim_throughput.sh llama-20m 256 32
#   (the same two with gpt2-124m 1024 16)
# Commas inside a sim spec's knobs are kept (sim:E5M2:overflow=saturate,rounding=stochastic); PROFILE=1 adds --profile.
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
OUT=${OUT:-/tmp/sim_throughput_out}
mkdir -p "$OUT"
PRESET=${1:-llama-20m}; SEQ=${2:-256}; BATCH=${3:-32}
BACKENDS=${BACKENDS:-bf16,sim:E8M3,sim:E5M2,sim:E4M3}
NAME=$PRESET${TAG:+-$TAG}
nvidia-smi -L
T0=$(date +%s)
timeout 570 python3 benchmarks/throughput.py --presets "$PRESET" --backends "$BACKENDS" --seq-len "$SEQ" \
  --batch "$BATCH" --steps 20 ${PROFILE:+--profile} --json "$OUT/$NAME.json" > "$OUT/$NAME.txt" 2>&1
echo "$NAME rc=$? $(( $(date +%s) - T0 )) s"
grep -v "Warn\|warn" "$OUT/$NAME.txt" | grep "^|\|^device\|^settings\|^note\|^profile" | head -40
tail -3 "$OUT/$NAME.txt"
