#!/usr/bin/env bash
# Fill a wheel folder (default .whl/, ignored by git) with what a GPU machine lent to this
# project lacks to run the chapters as a Colab reader does (benchmarks/gpu_colab_path.sh):
# that machine has Python 3.12, CUDA torch, NumPy, SciPy, pandas, matplotlib and seaborn, but
# no Jupyter kernel, no nbconvert and no nflows, and it cannot reach a package index.
#
#     bash benchmarks/gpu_wheels.sh [FOLDER]
#
# Downloads, for CPython $GPU_PYTHON_VERSION (default 3.12) on x86-64 manylinux, the wheels
# of ipykernel and nbconvert with everything they need (versions pinned by constraints.txt),
# setuptools (cifutils' build backend: pip builds the package in an isolated environment),
# and builds nflows' wheel (pure Python; its own needs, torch among them, are on the machine).
# Packages the machine already has are downloaded too, so the folder also installs into a
# bare Python; pip keeps the machine's copy wherever it satisfies the requirement. The folder
# is replaced only once every download has succeeded.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$ROOT/.whl}
PYV=${GPU_PYTHON_VERSION:-3.12}
PY=${PYTHON:-python3}
TMP="$DEST.partial"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
TARGET=(--only-binary=:all: --python-version "$PYV" --implementation cp)
for n in 17 24 26 27 28; do TARGET+=(--platform "manylinux_2_${n}_x86_64"); done
TARGET+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
quiet() { grep -v "is ignored: it is neither" || true; }  # this machine's index notices

"$PY" -m pip download --quiet --disable-pip-version-check "${TARGET[@]}" \
    -c "$ROOT/constraints.txt" -d "$TMP" ipykernel nbconvert "setuptools>=77" 2>&1 | quiet
NFLOWS=$(grep -i '^nflows==' "$ROOT/constraints.txt")
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$TMP" "$NFLOWS" 2>&1 | quiet
for need in ipykernel nbconvert setuptools nflows pyzmq tornado; do
    compgen -G "$TMP/${need}-*.whl" > /dev/null || { echo "no $need wheel in $TMP" >&2; exit 1; }
done
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1), in $DEST"
