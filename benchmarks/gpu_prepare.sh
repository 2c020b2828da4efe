#!/usr/bin/env bash
# Prepares the GPU check (benchmarks/gpu_check.sh) on a machine with PyPI, for a GPU machine
# that has no network and gets a copy of the checkout:
# - .whl/: wheels of the packages such a machine lacks or has in another version (an image with
#   torch, an older transformers, accelerate, and no trl, datasets or dagster), for Python 3.12 on
#   x86-64, at the versions of requirements.lock;
# - .gpu_data/multi30k/: the Multi30k de/fr files the benchmark reads (../shared/data is outside
#   the checkout);
# - both folders ignored (.gitignore, and .git/info/exclude); then it prints what the copy weighs
#   and the command to run there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS="transformers trl datasets peft dill multiprocess fsspec"
pins=()
for name in $WHEELS; do
    pin=$(grep -i "^$name==" requirements.lock) || { echo "$name is not pinned in requirements.lock"; exit 1; }
    pins+=("$pin")
done
rm -rf .whl && mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
DATA=${MT_ASSETS_SHARED_DATA:-../shared/data}
mkdir -p .gpu_data/multi30k
for file in train.de.gz train.fr.gz test_2016_flickr.de.gz test_2016_flickr.fr.gz; do
    cp "$DATA/multi30k/$file" .gpu_data/multi30k/
done
for folder in /.whl/ /.gpu_data/; do
    grep -qxF "$folder" "$(git rev-parse --git-path info/exclude)" 2>/dev/null \
        || echo "$folder" >> "$(git rev-parse --git-path info/exclude)"
done
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)
carried=$(du -cb .whl .gpu_data | tail -1 | cut -f1)
echo "wheels: $(ls .whl | tr '\n' ' ')"
echo "the copy: tracked $((tracked / 1024)) KiB + untracked ${untracked:-0} B + carried $((carried / 1024)) KiB" \
     "= $(((tracked + ${untracked:-0} + carried) / 1048576)) MiB of 64 MiB"
echo
echo "On the GPU machine (ends within 8 minutes; give it 570 s), with the ignored .whl and .gpu_data copied along:"
echo "  command:      bash benchmarks/gpu_check.sh"
echo "  copied along: .whl .gpu_data"
