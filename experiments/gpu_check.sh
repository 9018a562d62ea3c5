#!/usr/bin/env bash
# Every GPU measurement of issue 30 in one go (< 5 minutes on an H200), printed as one markdown
# table (experiments/gpu_check.py says what each row and column is):
#   bash ../shared/gpu/make-carry.sh                      # here: builds .dev/ (wheels, MNIST, run.sh)
#   bash .dev/run.sh bash experiments/gpu_check.sh        # there, from the project root
#   GPU_CHECK_CPU=1 bash experiments/gpu_check.sh         # its logic on a CPU: tiny runs, no GPU
# The table also goes to $OUT/gpu_check.md ($OUT: the device machine's folder that comes back; else /tmp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# .dev/run.sh's python3 (PYTHONPATH holds /tmp/site) there, the project's environment here
python=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && [[ "${PYTHONPATH:-}" != */tmp/site* ]]; then
  python=.venv/bin/python
fi
out=${OUT:-${TMPDIR:-/tmp}}/gpu_check.md
"$python" experiments/gpu_check.py "$@" | tee "$out.log"
# the table: from the heading line to the end
sed -n '/^gpu_check /,$p' "$out.log" >"$out"
