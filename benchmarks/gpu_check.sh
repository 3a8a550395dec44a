#!/usr/bin/env bash
# The GPU run, prepared: one command for a lent GPU machine, in at most 8 minutes of wall time.
#
#   bash benchmarks/gpu_check.sh OUT              on a machine with an NVIDIA GPU, CuPy and numba-cuda
#   bash benchmarks/gpu_check.sh --dry-run OUT    the same steps here: the CuPy stand-in (fakecupy) and
#                                                 Numba's CUDA simulator, tiny budgets (CI runs this)
#
# Each step runs under its own time budget (and never past the whole run's): a step that overruns is cut
# (timeout) and reported as "cut", and the run goes on to the next. OUT/ receives:
#   env.txt        nvidia-smi, the versions of Python, NumPy, CuPy, Numba, numba-cuda, PyTorch, the device
#   install.log, suite-backend.log, suite-cuda.log, suite-all.log
#                  the suite on the GPU (MINIS2S_BACKEND=cupy MINIS2S_REQUIRE_GPU=1): the backend-parametrised
#                  tests first, then the `cuda` kernels' tests on the device, then the whole default suite
#   gpu-small/, gpu-base/, gpu-large/ (+ gpu-*.log), gpu.json
#                  benchmarks/gpu.py per configuration: gpu.json / gpu.md / gpu.png with tokens/s, kernel
#                  launches, host time a launch, device -> host copies and bytes per training step and decode;
#                  OUT/gpu.json the rows of all three
#   train.log, train/  a 2-minute eng-fra training on the GPU, its test BLEU, and its validation BLEU and loss
#                  at each 500 steps beside the committed CPU run's at the same steps (train-vs-cpu.md)
#   summary.md     one table row per step: what ran, pass / fail / cut, its key figure, its time
# The exit status is 1 if a step failed (a cut step is reported, not failed), else 0.
set -u
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: bash benchmarks/gpu_check.sh [--dry-run] OUT}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
  # (name budget_seconds) for each step; the whole run's budget
  TOTAL=540
  BUDGET_INSTALL=60; BUDGET_ENV=30; BUDGET_BACKEND=240; BUDGET_CUDA=120; BUDGET_ALL=20
  BUDGET_GPU_SMALL=90; BUDGET_GPU_BASE=15; BUDGET_GPU_LARGE=15; BUDGET_TRAIN=120
  export MINIS2S_BACKEND=fakecupy
  GPU_BACKEND=fakecupy
  SELECT=fakecupy
  STAND_IN="--stand-in"
  TRAIN_ARGS=(--time-limit 8 --eval-every 20 --valid-bleu 20 --test-size 100 --beam 2)
  CUDA_ENV="NUMBA_ENABLE_CUDASIM=1"
  GPU_CONFIGS=(small base large)
  GPU_ARGS=(--repeats 1 --columns NumPy Numba "CuPy reference" "CuPy + kernels")
else
  TOTAL=480
  BUDGET_INSTALL=45; BUDGET_ENV=15; BUDGET_BACKEND=75; BUDGET_CUDA=35; BUDGET_ALL=60
  BUDGET_GPU_SMALL=40; BUDGET_GPU_BASE=45; BUDGET_GPU_LARGE=55; BUDGET_TRAIN=170
  export MINIS2S_BACKEND=cupy MINIS2S_REQUIRE_GPU=1
  GPU_BACKEND=cupy
  SELECT="cupy and not fakecupy"
  STAND_IN=""
  TRAIN_ARGS=(--time-limit 120 --eval-every 500 --valid-bleu 200)
  CUDA_ENV="NUMBA_ENABLE_CUDASIM=0"
  GPU_CONFIGS=(small base large)
  GPU_ARGS=(--repeats 3)
fi

START=$(date +%s)
ROWS="$OUT/.rows"
: > "$ROWS"
FAILED=0

seconds_left() { echo $(( TOTAL - ($(date +%s) - START) )); }

# step NAME BUDGET WHAT KEY_COMMAND -- COMMAND...
#   runs COMMAND with its output in OUT/NAME.log under min(BUDGET, what is left); KEY_COMMAND (a shell
#   snippet reading $LOG) prints the step's key figure for the summary
step() {
  local name=$1 budget=$2 what=$3 key=$4
  shift 5
  local left
  left=$(seconds_left)
  [ "$budget" -gt "$left" ] && budget=$left
  local LOG="$OUT/$name.log"
  if [ "$budget" -lt 5 ]; then
    echo "| $name | $what | cut | no time left of the run's ${TOTAL} s | 0 s |" >> "$ROWS"
    echo "== $name: cut (no time left)"
    return
  fi
  echo "== $name ($what; budget ${budget} s)"
  local began status figure took rc
  began=$(date +%s)
  timeout --kill-after=10 "$budget" "$@" > "$LOG" 2>&1
  rc=$?
  took=$(( $(date +%s) - began ))
  case $rc in
    0) status=pass ;;
    124|137) status=cut ;;
    *) status="fail (exit $rc)"; FAILED=1 ;;
  esac
  figure=$(LOG="$LOG" bash -c "$key" 2>/dev/null | tr '\n|' ' /' | cut -c1-160)
  [ "$status" = cut ] && figure="cut at ${budget} s; ${figure}"
  echo "| $name | $what | $status | ${figure:-—} | ${took} s |" >> "$ROWS"
  echo "   $status in ${took} s: ${figure:-—}"
}

PYTEST_LINE='grep -E "[0-9]+ (passed|failed|error)" "$LOG" | tail -1'

# 1. install minis2s into the machine's Python (no registry there: no dependencies fetched)
if [ "$DRY" = 1 ] && "$PYTHON" -c "import minis2s.kernels" 2>/dev/null; then
  step install "$BUDGET_INSTALL" "minis2s importable (dry run: already installed)" 'echo installed' -- \
    "$PYTHON" -c "import minis2s, minis2s.kernels; print(minis2s.__file__)"
else
  step install "$BUDGET_INSTALL" "pip install --no-deps --no-build-isolation -e ." 'tail -1 "$LOG"' -- \
    "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
fi

# 2. the machine
step env "$BUDGET_ENV" "nvidia-smi and versions" 'grep -E "^device" "$LOG"' -- \
  bash -c '(nvidia-smi || echo "nvidia-smi: not available here") && "$0" benchmarks/gpu_env.py "$1"' \
  "$PYTHON" "$GPU_BACKEND"
cp "$OUT/env.log" "$OUT/env.txt"

# 3. the suite on the GPU: the backend-parametrised tests first, the CUDA kernels on the device, then all
step suite-backend "$BUDGET_BACKEND" "the tests parametrised by backend, on $GPU_BACKEND" "$PYTEST_LINE" -- \
  "$PYTHON" -m pytest -q -m "not slow" -k "$SELECT" -p no:cacheprovider
step suite-cuda "$BUDGET_CUDA" "the cuda kernels' parity tests ($CUDA_ENV)" "$PYTEST_LINE" -- \
  env $CUDA_ENV "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider
step suite-all "$BUDGET_ALL" "the whole default suite on $GPU_BACKEND" "$PYTEST_LINE" -- \
  "$PYTHON" -m pytest -q -m "not slow" -p no:cacheprovider

# 4. benchmarks/gpu.py, one configuration a step (each writes its own folder; gpu.json merges them)
for config in "${GPU_CONFIGS[@]}"; do
  budget_var="BUDGET_GPU_$(echo "$config" | tr a-z A-Z)"
  step "gpu-$config" "${!budget_var}" "benchmarks/gpu.py at $config" \
    'echo "CuPy + kernels: train tok/s, greedy, beam 5 sent/s"; grep -F "CuPy + kernels" "$LOG" | grep -F "|" | head -1 | cut -d"|" -f6-8' -- \
    env MINIS2S_BACKEND=numpy MINIS2S_REQUIRE_GPU=0 "$PYTHON" benchmarks/gpu.py --configs "$config" \
    "${GPU_ARGS[@]}" $STAND_IN --out "$OUT/gpu-$config"
done
"$PYTHON" - "$OUT" "${GPU_CONFIGS[@]}" <<'EOF'
import json, os, sys
out, rows = sys.argv[1], []
for config in sys.argv[2:]:
    path = os.path.join(out, f"gpu-{config}", "gpu.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as stream:
            rows += json.load(stream)
with open(os.path.join(out, "gpu.json"), "w", encoding="utf-8") as stream:
    json.dump(rows, stream, indent=1)
EOF

# 5. a short eng-fra training on the GPU, beside the committed CPU run at the same steps
step train "$BUDGET_TRAIN" "eng-fra training on $GPU_BACKEND (${TRAIN_ARGS[1]} s), test BLEU" \
  'grep -E "^(trained|test )" "$LOG" | sed -E "s/ \(case-sensitive [0-9.]+\)//"' -- \
  "$PYTHON" -m minis2s train --out "$OUT/train" --backend "$GPU_BACKEND" --no-progress --samples 2 \
  "${TRAIN_ARGS[@]}"
"$PYTHON" - "$OUT" <<'EOF' > "$OUT/train-vs-cpu.md"
import json, os, sys
out = sys.argv[1]
cpu_path = "benchmarks/results/eng_fra_10min_history.json"
gpu_path = os.path.join(out, "train", "history.json")
if not os.path.exists(gpu_path):
    print("no GPU training history (the training step did not finish)")
    sys.exit()
with open(cpu_path, encoding="utf-8") as stream:
    cpu = {r["step"]: r for r in json.load(stream)}
with open(gpu_path, encoding="utf-8") as stream:
    gpu = json.load(stream)
print(f"Validation at the same steps: this run against the committed CPU run ({cpu_path}, the README's "
      "10-minute job on 2 CPU cores; same settings and seed).\n")
print("| step | GPU valid loss | CPU valid loss | GPU valid BLEU (greedy) | CPU valid BLEU (greedy) |")
print("| ---: | ---: | ---: | ---: | ---: |")
for record in gpu:
    other = cpu.get(record["step"])
    if other is None:
        continue
    print(f"| {record['step']} | {record.get('valid_loss', float('nan')):.3f} | {other.get('valid_loss'):.3f} "
          f"| {record.get('valid_bleu', float('nan')):.1f} | {other.get('valid_bleu', float('nan')):.1f} |")
EOF

# 6. the summary
{
  echo "# GPU check ($([ "$DRY" = 1 ] && echo "dry run: fakecupy stand-in and the CUDA simulator, no GPU" \
    || echo "on the GPU")), $(date -u +%Y-%m-%d), $(( $(date +%s) - START )) s of ${TOTAL} s"
  echo
  grep -E "^device" "$OUT/env.txt" | head -1
  echo
  echo "| step | what ran | result | key figure | time |"
  echo "| --- | --- | --- | --- | ---: |"
  cat "$ROWS"
  echo
  cat "$OUT/train-vs-cpu.md"
} > "$OUT/summary.md"
rm -f "$ROWS"
cat "$OUT/summary.md"
exit $FAILED
