# The CUDA numerics suite (issue 13): run on the lent GPU machine from the repo root, with the bundle carried as .gpu
# built with the test tools (pytest's and hypothesis' wheels, ml_dtypes):
#   ../shared/gpu/make-bundle .gpu pytest iniconfig pluggy packaging hypothesis sortedcontainers attrs ml_dtypes
# device command:  bash jobs/gpu/cuda_suite.sh            (carry [".gpu"]; results in $OUT)
# CPU_TOO=1 also runs the CPU numerics tests on the GPU machine's torch (another ~3 min).
# Writes $OUT/cuda_suite.txt and $OUT/cuda_suite.xml (JUnit); exits with pytest's status.
source .gpu/install.sh > /tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
OUT=${OUT:-/tmp/cuda_suite_out}
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
python3 -c "import pytest, hypothesis, ml_dtypes" || { echo "the bundle lacks pytest/hypothesis/ml_dtypes: see the header"; exit 1; }

T0=$(date +%s)
timeout 540 python3 -m pytest tests/test_cuda_numerics.py -m cuda -q -rfEs -p no:cacheprovider --durations=15 \
  --junitxml="$OUT/cuda_suite.xml" > "$OUT/cuda_suite.txt" 2>&1
rc=$?
echo "cuda suite rc=$rc $(( $(date +%s) - T0 )) s"
grep -v "^DEBUG\|^  " "$OUT/cuda_suite.txt" | tail -40
if [ "${CPU_TOO:-0}" = 1 ]; then
  timeout $(( 570 - $(date +%s) + T0 )) python3 -m pytest tests/test_quantize.py tests/test_simulated.py -q -rfE \
    -p no:cacheprovider > "$OUT/cpu_numerics.txt" 2>&1
  echo "cpu numerics rc=$? $(( $(date +%s) - T0 )) s"; tail -5 "$OUT/cpu_numerics.txt"
fi
exit $rc
