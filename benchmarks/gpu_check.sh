#!/usr/bin/env bash
# Every GPU check of the project in one command, for a lent GPU machine with a time budget:
#     bash benchmarks/gpu_check.sh OUT_DIR [SECONDS]
# 1. the GPU tests (pytest -m gpu tests/runtime), their whole log kept;
# 2. the runtime sweep (benchmarks/runtime.py --sweep: bandwidth, then per capacity (90/25/10/5%) the GPU model,
#    on-demand and one offloaded row per eviction policy decoding in lockstep), its JSON saved after every
#    capacity, so a sweep cut short by SECONDS (default 420) still leaves the capacities it finished.
# EVICTIONS picks the offloaded rows' policies (default fld,least-stale-reverse), CAPACITIES the capacities (default
# 0.9,0.25,0.1,0.05: a shorter list fits a smaller budget); PROFILE=0.25 adds a profile of
# 8 decode steps at that capacity (<OUT_DIR>/runtime.profile.txt). Wheels in .whl/ (a transformers newer than
# the machine's, say) are installed to /tmp/site first; the checkout is used in place through PYTHONPATH.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [SECONDS]}
budget=${2:-420}
evictions=${EVICTIONS:-fld,least-stale-reverse}
capacities=${CAPACITIES:-0.9,0.25,0.1,0.05}
profile=${PROFILE:+--profile $PROFILE}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD || exit 2
fi
start=$SECONDS
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -q -m gpu tests/runtime -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log"
left=$((budget - (SECONDS - start)))
# shellcheck disable=SC2086  # $profile is two words or none
timeout "$left" python3 benchmarks/runtime.py --sweep --skip-tests --capacities "$capacities" \
    --evictions "$evictions" $profile --out "$out/runtime.json" 2>&1 | tee "$out/sweep.log"
echo "gpu_check: done in $((SECONDS - start)) s"
