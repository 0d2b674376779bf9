#!/usr/bin/env bash
# The GPU figures of reports/performance.md, in one pass (a lent H100/H200 machine, PyTorch preinstalled).
#   bash benchmarks/gpu.sh DATA_ROOT OUT_DIR
# DATA_ROOT holds bloodmnist.npz; every log goes to OUT_DIR. Packages missing on the machine come from
# wheels in .whl/ when that folder exists (diffusers, pydantic, medmnist, ...; see reports/performance.md).
set -uo pipefail
DATA_ROOT=${1:?usage: gpu.sh DATA_ROOT OUT_DIR}; OUT_DIR=${2:?usage: gpu.sh DATA_ROOT OUT_DIR}
STEPS=${GPU_BENCH_STEPS:-1500}; PER_CLASS=${GPU_BENCH_PER_CLASS:-5000}   # smaller values try the script on a CPU
mkdir -p "$OUT_DIR"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RUNS=$(mktemp -d)
stamp() { echo "## $(date -u +%H:%M:%S) $*"; }
{
  stamp hardware
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, diffusers, accelerate, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())"
  nproc
} > "$OUT_DIR/hardware.txt" 2>&1
cat "$OUT_DIR/hardware.txt"

# 1. The training step against diffusers' reference loop (fp32 and bf16, two batch sizes).
for mp_batch in no:64 bf16:64 bf16:256; do
  stamp "fit_throughput ${mp_batch}"
  python3 benchmarks/fit_throughput.py --data-root "$DATA_ROOT" --steps 50 --warmup 10 \
    --mixed-precision "${mp_batch%%:*}" --batch-size "${mp_batch##*:}"
done > "$OUT_DIR/fit_throughput.txt" 2>&1
cat "$OUT_DIR/fit_throughput.txt"

# 2. A whole study generator (recipes/bloodmnist-study.yaml, 25/class subset 0) in bf16: wall clock from summary.json.
stamp "fit bloodmnist-study bf16" | tee "$OUT_DIR/fit.txt"
( time python3 -m synthaug fit recipes/bloodmnist-study.yaml --data-root "$DATA_ROOT" --no-progress \
    --set output_dir="$RUNS" --set train.mixed_precision=bf16 --set train.steps="$STEPS" ) >> "$OUT_DIR/fit.txt" 2>&1
cat "$RUNS/bloodmnist-study/summary.json" >> "$OUT_DIR/fit.txt" 2>&1
cp "$RUNS/bloodmnist-study/metrics.csv" "$OUT_DIR/fit_metrics.csv" 2>/dev/null
cat "$OUT_DIR/fit.txt"

# 3. generate from that model: noise-drawn (guided, as the study) and variations of the real images.
{
  stamp "generate --per-class $PER_CLASS (8 classes), dpm-solver++ 20, batch 1024"
  time python3 -m synthaug generate --run "$RUNS/bloodmnist-study" --per-class "$PER_CLASS" --batch-size 1024 --no-progress
  stamp "generate --per-class $PER_CLASS, guidance 4, 50 steps, batch 1024"
  time python3 -m synthaug generate --run "$RUNS/bloodmnist-study" --per-class "$PER_CLASS" --batch-size 1024 --no-progress \
    --guidance-scale 4 --steps 50 --out "$RUNS/g4"
  stamp "generate --from-real --per-real 5 --strength 0.35"
  time python3 -m synthaug generate --run "$RUNS/bloodmnist-study" --from-real --per-real 5 --strength 0.35 \
    --data-root "$DATA_ROOT" --batch-size 1024 --no-progress --out "$RUNS/var"
} > "$OUT_DIR/generate.txt" 2>&1
cat "$OUT_DIR/generate.txt"

# 4. The sampler against diffusers' DDPMPipeline (untrained quickstart architecture, all images in one batch).
stamp "generate_throughput" > "$OUT_DIR/generate_throughput.txt"
python3 benchmarks/generate_throughput.py --images 1024 --ddpm-images 256 --batch-size 1024 >> "$OUT_DIR/generate_throughput.txt" 2>&1
cat "$OUT_DIR/generate_throughput.txt"
stamp done
