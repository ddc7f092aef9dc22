#!/usr/bin/env bash
# Continue the unfinished Table-1 runs carried in runs-carry/vae/ on a GPU lent to this project,
# all together with `vae-many` (each run's step replayed as a CUDA graph on its own stream),
# for MINUTES of training, and send their new checkpoints back.
#
#     bash benchmarks/gpu_table1_resume.sh MINUTES COMMIT
#
# COMMIT is the checkout's commit (the copy sent to the GPU machine has no .git); it goes into
# the summary's provenance. The machine has no nflows and no data: the script takes the data
# from $CIFUTILS_DATA, else .devcarry/data, else _build/keep/data, and nflows from a wheel in
# .devcarry/, .whl/ or _build/keep/ (_build is ignored, so what an earlier call of the same
# session copies there stays on the machine for the next call).
#
# The tree that travels is limited to 64 MiB and the carried checkpoints are about 50 MB, so
# prepare here (MNIST 12 MB; the training needs neither results/ nor the notebooks or book/):
#     bash benchmarks/gpu_wheels.sh && mkdir -p .devcarry/data && cp .whl/nflows-*.whl .devcarry/
#     cp -r "$CIFUTILS_DATA"/mnist .devcarry/data/ && git rev-parse HEAD > .devcarry/commit
#     mkdir ../aside && mv results notebooks book ../aside/      # about 11 MB that need not go
# then one call of the device tool with carry [".devcarry"] and timeout_s 600:
#     bash benchmarks/gpu_table1_resume.sh 8.5 $(cat .devcarry/commit)
# and afterwards `mv ../aside/* . && rmdir ../aside`.
#
# Back in $OUT (at most 8 files of 16 MiB): train.log, summary.json (vae-many's per-run record:
# epochs, best validation ELBO, per-epoch history and seconds), SHA256SUMS, and each run's
# checkpoint in pieces of 15 MiB (<name>.pt.part-aa, -ab, ...). Here, for each run:
#     cat <name>.pt.part-* > runs-carry/vae/<name>/checkpoint.pt   # then check SHA256SUMS
# DEVICE=cpu (default cuda) runs the same steps eagerly on a CPU, to try the script out.
set -u -o pipefail
MINUTES=${1:?usage: $0 MINUTES COMMIT}
export CIFUTILS_GIT_COMMIT=${2:?usage: $0 MINUTES COMMIT}
export PYTHONUNBUFFERED=1 CIFUTILS_PROGRESS=0 CUDA_DEVICE_MAX_CONNECTIONS=32
OUT=${OUT:?OUT must name the folder whose files come back}
for d in "${CIFUTILS_DATA:-}" .devcarry/data _build/keep/data; do
    [ -n "$d" ] && [ -d "$d/mnist" ] && { export CIFUTILS_DATA=$(cd "$d" && pwd); break; }
done
[ -d "${CIFUTILS_DATA:-/nonexistent}/mnist" ] || { echo "no MNIST data found" >&2; exit 2; }
if ! python3 -c "import nflows" 2>/dev/null; then
    wheel=$(ls .devcarry/nflows-*.whl .whl/nflows-*.whl _build/keep/nflows-*.whl 2>/dev/null | head -n 1)
    [ -n "$wheel" ] || { echo "no nflows and no nflows wheel" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$wheel" || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi 2>/dev/null --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__)"

# The carried runs, each named by its folder; vae-many resumes the runs it is given.
mkdir -p runs/vae _build
ARGS=()
for ck in runs-carry/vae/*/checkpoint.pt; do
    name=$(basename "$(dirname "$ck")")
    (cd "$(dirname "$ck")" && sha256sum -c --quiet checkpoint.pt.sha256) || exit 2
    cp -r "$(dirname "$ck")" runs/vae/
    ARGS+=("$name")
done
[ ${#ARGS[@]} -gt 0 ] || { echo "no runs in runs-carry/vae" >&2; exit 2; }
python3 - "${ARGS[@]}" > _build/resume-args <<'PY'
import re, sys
ds, qs, seeds = set(), set(), set()
for name in sys.argv[1:]:
    m = re.fullmatch(r"(mnist|fashion-mnist)-(.+)-table1-seed(\d+)-paper", name)
    if not m:
        sys.exit(f"not a Table-1 paper run: {name}")
    ds.add(m[1]); qs.add(m[2]); seeds.add(m[3])
if len(ds) * len(qs) * len(seeds) != len(sys.argv[1:]):
    sys.exit(f"the runs {sys.argv[1:]} are not a full grid of datasets x posteriors x seeds")
print("--datasets", *sorted(ds), "--posteriors", *sorted(qs), "--seeds", *sorted(seeds))
PY
[ $? -eq 0 ] || exit 2
echo "runs: ${ARGS[*]}"
python3 -m cifutils.experiments vae-many $(cat _build/resume-args) --budget paper \
    --device "${DEVICE:-cuda}" --time-limit "$MINUTES" --summary "$OUT/summary.json" 2>&1 | tee "$OUT/train.log"
RC=$?  # the checkpoints are packed either way: each is the run's last finished epoch

for name in "${ARGS[@]}"; do
    (cd runs/vae/"$name" && sha256sum checkpoint.pt | sed "s|checkpoint.pt|$name/checkpoint.pt|") \
        >> "$OUT/SHA256SUMS"
    split -b 15M runs/vae/"$name"/checkpoint.pt "$OUT/$name.pt.part-"
done
ls -la "$OUT"
exit $RC
