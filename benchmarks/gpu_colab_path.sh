#!/usr/bin/env bash
# Chapters 1-6 on a GPU machine lent to this project, through the install a Colab reader
# gets (.ci/colab-path with COLAB_PATH_SITE=system: the machine's own CUDA torch, cifutils
# installed as a package, chapters run outside the checkout), timed into the run cards.
#
# Prepare here (the tree that travels to the machine is limited to 64 MiB):
#     bash benchmarks/gpu_wheels.sh                      # .whl/: kernel, nbconvert, nflows
#     mkdir -p .devcarry/data && cp -r "$CIFUTILS_DATA"/mnist .devcarry/data/
#     git rev-parse HEAD > .devcarry/commit               # the machine's copy has no .git
#     mv runs-carry ../runs-carry.aside                   # 50 MB of checkpoints need not travel
# then one call of the device tool with carry [".whl", ".devcarry"] and timeout_s 600 (and,
# if the chapters are not done by then, a second at once: an idle machine goes back within
# seconds):
#     bash benchmarks/gpu_colab_path.sh start [BUDGET [NOTEBOOK...]]  # default: book, all
#     bash benchmarks/gpu_colab_path.sh wait              # until done, at most 560 s
# and afterwards `mv ../runs-carry.aside runs-carry`. On an H200 (2026-12-04, at 2217ea2) the
# six chapters at `book` took 417 s and the whole `start` call 481 s. Back in $OUT: times.tsv,
# the record (execution.json: copy it over results/execution.json to put the GPU times in the
# run cards; with NOTEBOOK arguments it holds the other chapters' entries unchanged),
# run.log, and the executed notebooks (notebooks.tgz, for a look, not to commit: the book
# shows the CPU `book` run).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
L=_build/colab-path   # ignored: kept on the machine between the two calls
export PIP_NO_INDEX=1 PIP_FIND_LINKS=$ROOT/.whl PIP_NO_CACHE_DIR=1
export PYTHON=python3 COLAB_PATH_SITE=system COLAB_PATH_OUT=$ROOT/$L
export COLAB_PATH_RECORD=$ROOT/$L/execution.json   # not results/: the next call overwrites it
export COLAB_PATH_COMMIT=$(cat .devcarry/commit 2>/dev/null || echo unknown)
export CIFUTILS_DATA=$ROOT/.devcarry/data PYTHONUNBUFFERED=1
T0=$(date +%s)

pack() {
    cp $L/times.tsv $L/execution.json $L/run.log "$OUT"/ 2>/dev/null
    (cd $L && ls *.ipynb > /dev/null 2>&1 && tar czf "$OUT/notebooks.tgz" *.ipynb)
    ls -la "$OUT"
}

monitor() {  # until the run ends or $1 seconds after this call began
    while pgrep -f "colab-path" > /dev/null && [ $(( $(date +%s) - T0 )) -lt "$1" ]; do
        sleep 20
        echo "--- $(( $(date +%s) - T0 )) s: $(grep -c ' took ' $L/run.log) chapters done"
    done
    grep "took\|Error\|error" $L/run.log | tail -n 12
}

case "${1:-}" in
start)
    for need in .whl .devcarry/data/mnist; do
        [ -e "$need" ] || { echo "missing $need: prepare it first (see the header)" >&2; exit 2; }
    done
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    rm -rf $L && mkdir -p $L
    cp results/execution.json $L/execution.json
    setsid nohup .ci/colab-path "${2:-book}" "${@:3}" > $L/run.log 2>&1 < /dev/null &
    monitor 560
    pack
    ;;
wait)
    monitor 560
    pack
    ;;
*)
    echo "usage: $0 start [BUDGET [NOTEBOOK...]] | wait" >&2
    exit 2
    ;;
esac
