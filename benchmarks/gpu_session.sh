#!/usr/bin/env bash
# Issue 11 in ONE call on a lent GPU (H100 / H200): build, test, measure against the official
# StyleGAN-NADA code side by side, write logs + a summary under $OUT, print a short table last.
# Wall time about 8-9 minutes; every stage has its own timeout so that the table always comes.
#
# Prepare once, on the machine that calls the device tool, in the repository root:
#   echo /.ref/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   mkdir -p .ref/StyleGAN-nada && git --git-dir=<mirror of rinongal/StyleGAN-nada> archive dc8406a \
#       | tar -x -C .ref/StyleGAN-nada                  # 17 MB without .git; never committed
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4   # what the GPU image lacks (2.3 MB)
# Then: run(command="bash benchmarks/gpu_session.sh", carry=[".ref", ".whl"], timeout_s=600)
#
#   bash benchmarks/gpu_session.sh --dry-run     # the same stages on the CPU with tiny settings (minutes)
set -u
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$(pwd)/gpu_out}"
W="${WORK_DIR:-/tmp/nada_gpu_session}"      # everything lands here; $OUT gets at most 6 files (the tool returns 8)
rm -rf "$W"; mkdir -p "$OUT" "$W"
PY="${PYTHON:-python3}"
[ -x /work/main/.venv/bin/python ] && [ "$DRY" = 1 ] && PY=/work/main/.venv/bin/python
export PYTHONUNBUFFERED=1
# measure (and test) the device loop + CUDA graph as 'auto' will choose them once verified
export NADA_GPU_FAST_PATH=1
T0=$(date +%s)
DEADLINE=$(( T0 + ${BUDGET_S:-$([ "$DRY" = 1 ] && echo 7200 || echo 540)} ))     # the summary must come before the call's 600 s limit
stage() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
# t N: a stage's timeout, N seconds at most and never past the deadline (a stage that cannot
# start any more gets 1 s and is reported as timed out)
t() { local cap=$1; [ "$DRY" = 1 ] && cap=$(( cap * 20 )); local r=$(( DEADLINE - $(date +%s) ))
      [ "$r" -lt 1 ] && r=1; [ "$r" -gt "$cap" ] && r=$cap; echo "$r"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "$DRY" = 0 ]; then
  stage "installing carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
OFFICIAL="${OFFICIAL_DIR:-.ref/StyleGAN-nada}"

stage "environment" | tee "$W/env.log"
{ $PY -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu',
torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'open_clip', open_clip.__version__)";
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nvcc --version 2>/dev/null | tail -1; } 2>&1 | tee -a "$W/env.log"

if [ "$DRY" = 1 ]; then
  DEV=cpu; RES_TOP=64; RES_LOW=32; CLIP="ViT-B-32"; IT=1; WU=1; SB="1 2"; SR="64"; CB="--channel-base 1024"
  OFFICIAL="${OFFICIAL_DIR:-/tmp/nada_ref_cpu}"
else
  DEV=cuda; RES_TOP=1024; RES_LOW=256; CLIP="ViT-B-32 ViT-B-16"; IT=10; WU=5; SB="1 16 64"; SR="1024 256"; CB=""
  stage "building the CUDA extension"
  timeout $(t 120) $PY -m nada_ops.kernels.build 2>&1 | tail -5 | tee "$W/build.log"

  stage "GPU tests: kernels (parity) + issue 11 (CUDA graph, guard, fast follows exact)"
  timeout $(t 100) $PY -m pytest -q -p no:cacheprovider -x -s tests/test_speed_gpu.py tests/test_kernels.py \
    > "$W/tests_gpu.log" 2>&1
  echo "pytest exit $?"; grep -E "passed|failed|error|vs exact" "$W/tests_gpu.log" | tail -8
  stage "GPU tests: StyleGAN3 filtered_lrelu kernel (never run on a GPU before; auto keeps the reference until it passes)"
  timeout $(t 40) $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_filtered_lrelu.py \
    >> "$W/tests_gpu.log" 2>&1
  echo "pytest exit $?"; grep -E "passed|failed|error" "$W/tests_gpu.log" | tail -2
fi

stage "official StyleGAN-NADA loop ($OFFICIAL)"
if [ -d "$OFFICIAL/ZSSGAN" ]; then
  timeout $(t 130) $PY benchmarks/bench_official.py --official-dir "$OFFICIAL" --device $DEV --res $( [ $DRY = 1 ] && echo 32 || echo "$RES_TOP $RES_LOW" ) \
    --modes all adaptive --clip $CLIP --iters $IT --warmup $( [ $DRY = 1 ] && echo 1 || echo 3 ) \
    --sample-res $( [ $DRY = 1 ] && echo 32 || echo 1024 ) --sample-batches $( [ $DRY = 1 ] && echo 2 || echo 16 ) \
    --json "$W/official.json" > "$W/official.log" 2>&1
  echo "exit $?"; tail -4 "$W/official.log"
else
  echo "no official checkout at $OFFICIAL: skipped (see the top of this script)"
fi

stage "this pack: training loop"
# 1) the paper's settings, exact vs fast, whole-iteration CUDA graph (auto), all + adaptive k=12, 1024 + 256 px
timeout $(t 130) $PY benchmarks/bench_adapt.py $CB --device $DEV --res $RES_TOP $RES_LOW --modes all adaptive --clip $CLIP \
  --precision exact fast --capture auto --iters $IT --warmup $WU --json "$W/adapt_main.json" \
  --write "$W/RESULTS_gpu.md" > "$W/adapt_main.log" 2>&1
echo "exit $?"
stage "this pack: sampling"
timeout $(t 50) $PY benchmarks/bench_sample.py $CB --device $DEV --res $SR --batch $SB --precision exact fast \
  --modconv scaled grouped --repeats $( [ $DRY = 1 ] && echo 1 || echo 5 ) --json "$W/sample.json" \
  --write "$W/RESULTS_gpu.md" > "$W/sample.log" 2>&1
echo "exit $?"

stage "this pack: levers one at a time"
# 2) levers one at a time at 1024 px, all layers, fast: eager (no graph), reference ops, grouped modconv,
#    channels_last, bf16; then a profile of the default
timeout $(t 40) $PY benchmarks/bench_adapt.py $CB --device $DEV --res $RES_TOP --modes all --clip $CLIP --precision fast \
  --capture none --iters $IT --warmup $WU --json "$W/adapt_eager.json" --write "$W/RESULTS_gpu.md" \
  > "$W/adapt_levers.log" 2>&1
timeout $(t 40) $PY benchmarks/bench_adapt.py $CB --device $DEV --res $RES_TOP --modes all --clip $CLIP --precision fast bf16 \
  --ops reference --iters $IT --warmup $WU --json "$W/adapt_ops.json" --write "$W/RESULTS_gpu.md" \
  >> "$W/adapt_levers.log" 2>&1
timeout $(t 50) $PY benchmarks/bench_adapt.py $CB --device $DEV --res $RES_TOP --modes all adaptive --clip $CLIP --precision fast \
  --modconv grouped --channels-last off on --iters $IT --warmup $WU --json "$W/adapt_modconv.json" \
  --write "$W/RESULTS_gpu.md" >> "$W/adapt_levers.log" 2>&1
timeout $(t 35) $PY benchmarks/bench_adapt.py $CB --device $DEV --res $RES_TOP --modes all --clip $CLIP --precision fast \
  --iters 3 --warmup $WU --profile 3 --json "$W/adapt_profile.json" > "$W/adapt_profile.log" 2>&1
echo "levers done"

stage "summary"
$PY benchmarks/gpu_summary.py "$W" > "$W/summary.md" 2>&1
tar czf "$OUT/all_logs.tgz" -C "$W" . 2>/dev/null
for f in summary.md RESULTS_gpu.md tests_gpu.log official.log adapt_profile.log; do
  [ -f "$W/$f" ] && cp "$W/$f" "$OUT/$f"
done
cat "$W/summary.md"
