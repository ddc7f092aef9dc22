#!/usr/bin/env bash
# The GPU session behind results/vae/*-paper.json (three seeds, CUDA graphs, time-limited) and
# the seed-2 paper runs of results/mog/paper/. Run from the repository root on a GPU machine,
# in three phases (each within one 10-minute command of the device tool):
#     bash benchmarks/gpu_session.sh start MINUTES   # set up, MoG on CPU cores, benchmark, train
#     bash benchmarks/gpu_session.sh wait SECONDS    # let training run, copy progress out
#     bash benchmarks/gpu_session.sh finish          # wait for training, evaluate, copy out
#     bash benchmarks/gpu_session.sh mog-gpu         # MoG training-step benchmark on the GPU
# (mog-gpu is not yet run. The paper estimator study, once planned for it, ran on the CPU:
# results/mog/README.md.)
# Every phase must carry .devcarry (a call that does not carry it finds it removed), which
# holds nflows and the data: .devcarry/site (nflows' package folder) and .devcarry/data (the
# folders mnist/ and fashion-mnist/ of the canonical gzip files); .devcarry/commit the commit
# (the copy of the checkout sent to the GPU machine has no .git). Outputs go to $OUT; pack
# before each call ends: new files outside ignored folders (results/...) are removed there
# when the next call copies the working tree over.
set -u
export PYTHONPATH=$PWD/.devcarry/site:$PWD PYTHONUNBUFFERED=1 CIFUTILS_PROGRESS=0
export CIFUTILS_DATA=$PWD/.devcarry/data CUDA_DEVICE_MAX_CONNECTIONS=32
export CIFUTILS_GIT_COMMIT=$(cat .devcarry/commit 2>/dev/null || git rev-parse HEAD)
L=runs/gpu
PY=$(command -v python3 || command -v python)
mkdir -p $L
T0=$(date +%s)
POSTERIORS="gaussian nsf cif-nsf"
DATASETS="mnist fashion-mnist"

pack() {  # results, logs and the runs' best weights into $OUT: at most 8 files of <= 16 MiB
  $PY - <<'PY'
import glob, os, torch
for path in sorted(glob.glob("runs/vae/*-paper")):  # one file per (dataset, posterior)
    name = os.path.basename(path).rsplit("-seed", 1)[0]
    out = {}
    for ck_path in sorted(glob.glob(f"runs/vae/{name}-seed*-paper/checkpoint.pt")):
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        out[ck_path.split("/")[2]] = {"best_model": ck["best_model"], "state": ck["state"],
                                      "config": ck["config"]}
    torch.save(out, os.path.join(os.environ["OUT"], f"best-{name}.pt"))
PY
  tar czf "$OUT/results.tgz" results/vae/*.json results/mog/paper/*seed2* results/mog/paper/estimator_* $L/*.log $L/*.json 2>/dev/null
  ls -la "$OUT"
}

monitor() {  # until $1 seconds after this phase began
  while [ $(( $(date +%s) - T0 )) -lt "$1" ]; do
    sleep 45
    echo "--- $(( $(date +%s) - T0 )) s"; tail -n 2 $L/train.log 2>/dev/null | cut -c1-400
    grep -h "final\|wrote\|Error" $L/mog-*.log 2>/dev/null | tail -n 3
  done
}

case "$1" in
start)
  nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv
  $PY -c "import torch, nflows, cifutils; print(torch.__version__, torch.cuda.is_available())"
  timeout 200 $PY benchmarks/bench_vae_gpu.py --steps 50 --runs 6 2>&1 | tee $L/bench.log
  grep -q "CUDA graph ms/step" $L/bench.log || exit 1  # no graphs: stop here and fix
  for m in nsf cif-nsf; do
    for s in 0.1 1 10; do
      setsid nohup $PY -m cifutils.experiments mog --model $m --sigma0 $s --seed 2 \
        --budget paper --threads 1 > $L/mog-$m-$s.log 2>&1 < /dev/null &
    done
  done
  setsid nohup $PY -m cifutils.experiments vae-many --datasets $DATASETS \
    --posteriors $POSTERIORS --seeds 0 1 2 --budget paper --device cuda \
    --time-limit "$2" --summary $L/summary.json > $L/train.log 2>&1 < /dev/null &
  monitor 570
  pack
  ;;
wait)
  monitor "$2"
  pack
  ;;
finish)
  while pgrep -f "experiments vae-many" > /dev/null; do sleep 10; done
  tail -n 20 $L/train.log
  for d in $DATASETS; do
    for q in $POSTERIORS; do
      ( for s in 0 1 2; do
          $PY -m cifutils.experiments vae --dataset $d --posterior $q --seed $s \
            --budget paper --epochs 0 --device cuda --test-k 100 1000 \
            --gap-images 10 --amortization-steps 50 >> $L/eval-$d-$q.log 2>&1
        done ) &
    done
  done
  while pgrep -f "experiments vae " > /dev/null; do
    sleep 30; echo "--- $(( $(date +%s) - T0 )) s: $(ls results/vae/*.json | wc -l) results"
    pack > /dev/null
  done
  grep -h "test_iw_k100\|name" $L/eval-*.log | cut -c1-200
  pack
  ;;
mog-gpu)
  $PY benchmarks/bench_mog.py --device cuda --threads 1 --steps 20 --repeats 3 \
    2>&1 | tee $L/bench_mog.log
  pack
  ;;
esac
