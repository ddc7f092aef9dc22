#!/usr/bin/env bash
# Chapter 6 at the `paper` budget, before all its runs are trained: a check of the code path,
# not a result. The MNIST Table-1 runs of seed 0 that results/vae/ lacks (finished, with
# weights) get 1-epoch stand-ins, trained and evaluated cheaply by the experiment command
# line and marked finished in a copy of results/; chapter 6 then executes at `paper` against
# that copy (it loads the committed runs through vx.committed_runs instead of training), and
# the executed notebook is left in the work folder for a look. Nothing in the repository
# changes. Usage, from the repository root with the venv built (make venv) and the data:
#     CIFUTILS_DATA=/path/to/data bash benchmarks/ch6_paper_standins.sh [WORK_FOLDER]
# Session 20 (2-core AMD EPYC, beside two training runs): 12 min 17 s in all, the chapter
# about 2.5 minutes of it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d)}
PY=$ROOT/.venv/bin/python
: "${CIFUTILS_DATA:?set CIFUTILS_DATA to the folder holding mnist/}"
if [ -e "$WORK/results" ]; then
    echo "$WORK/results exists: give an empty or new work folder" >&2
    exit 2
fi
mkdir -p "$WORK"
cp -r "$ROOT/results" "$WORK/results"
for q in gaussian nsf cif-nsf; do
    name=mnist-$q-table1-seed0-paper
    # committed and finished, with weights: the chapter's own rule (vx.committed_runs)
    if "$PY" - "$q" "$WORK/results/vae" <<'EOF'; then continue; fi
import sys
from cifutils.experiments import vae as vx
cfg = vx.VAEConfig("mnist", sys.argv[1], 0, "paper", arch="table1")
sys.exit(vx.committed_runs([cfg], folder=sys.argv[2]) is None)
EOF
    echo "stand-in for $name (1 epoch)"
    "$PY" -m cifutils.experiments vae --dataset mnist --posterior "$q" --seed 0 \
        --budget paper --arch table1 --threads 1 --epochs 1 --save-weights --test-k 100 \
        --test-limit 20 --gap-images 2 --amortization-steps 2 \
        --runs-dir "$WORK/runs" --out-dir "$WORK/standins" > "$WORK/standin-$q.log" 2>&1
    "$PY" - "$WORK/standins/$name.json" "$WORK/results/vae" <<'EOF'
import json, pathlib, shutil, sys
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
record = json.loads(src.read_text())
record["complete"] = True  # a stand-in: one epoch, marked finished for this check only
(dest / src.name).write_text(json.dumps(record))
shutil.copy(src.parent / record["weights"]["file"], dest / record["weights"]["file"])
EOF
done
cd "$ROOT"
CIFUTILS_RESULTS=$WORK/results CIFUTILS_BUDGET=paper CIFUTILS_PROGRESS=0 \
    .venv/bin/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=3600 \
    notebooks/06_vae.ipynb --output-dir "$WORK" --output 06_vae-paper.ipynb
grep -q '"the committed runs of the command line, loaded' "$WORK/06_vae-paper.ipynb" || {
    echo "chapter 6 did not take the committed runs" >&2
    exit 1
}
echo "chapter 6 ran at paper against the stand-ins: $WORK/06_vae-paper.ipynb"
