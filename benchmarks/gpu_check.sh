#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py): the fast paths' equality tests on CUDA
# in fp32 and bf16, then the throughput benchmark, within 8 minutes on one H100/H200; JSON and logs
# under $OUT.
#
#   benchmarks/gpu_check.sh           on a GPU machine: installs the wheels of .whl/ (filled by
#                                     benchmarks/gpu_prepare.sh) and reads Multi30k from .gpu_data/
#   benchmarks/gpu_check.sh --smoke   on a CPU, with PYTHON (default python3): tiny sizes,
#                                     the same stages and the same JSON, nothing installed
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "${1:-}" != "--smoke" ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || echo "installing the wheels of .whl/ failed: going on with what is installed"
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .gpu_data/multi30k ]; then
    export MT_ASSETS_SHARED_DATA=$PWD/.gpu_data
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
