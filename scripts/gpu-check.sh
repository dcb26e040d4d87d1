#!/usr/bin/env bash
# The CUDA check in one run (issue #13): on a fresh machine with an NVIDIA GPU (16 cores: ~6-8 min,
# most of it the build), it
#   1. builds adept with CUDA (scripts/build-cuda.sh; CUDA_COMPUTE_CAP from nvidia-smi), or takes
#      a prebuilt CUDA binary from $ADEPT_CUDA_BIN (the toolkit wheels are still installed: the
#      binary loads cudart/cuBLAS/cuRAND from them);
#   2. fetches all-MiniLM-L6-v2, ONNX Runtime (CPU and `--gpu`) and OpenBLAS into the adept cache,
#      and cuDNN 9 + cuFFT (PyPI) for ONNX Runtime's CUDA provider;
#   3. trains a few ADePT steps on the CPU and on CUDA with the same seed and compares the
#      training losses and the adapter tensors (checkpoint.safetensors); then the same steps with
#      the frozen backbone under bf16 autocast (`--autocast bf16`) on CUDA, and on the CPU (which
#      runs without a GPU too), each compared with the f32 CPU run under bf16's tolerances;
#   4. `adept bench` on CUDA (ADePT step time, batch 32) for MiniLM and for a BERT-base-sized
#      encoder with random weights (12 layers, d=768; written by scripts/random-bert.py), MiniLM
#      also on the CPU, and the PyTorch reference step on CUDA when torch installs in the time left;
#   5. exports the CUDA-trained adapter and serves the bundle with ONNX Runtime on CUDA vs the CPU:
#      logits within 1e-4, throughput at batch 1 and 32, and whether ORT placed nodes off CUDA.
# Every step is recorded (ok / failed / skipped, seconds, figures, the error's last lines) in one
# JSON report: $OUT/gpu-check.json if $OUT is set, else target/gpu-check/gpu-check.json. A step
# that needs the GPU fails with the reason instead of stopping the script.
#
# Without a GPU (no nvidia-smi) the script still runs everything up to the GPU: the CUDA binary
# starts with the link-time stub libcuda (every driver call answers "no device"), so `--device
# cuda` must fail with a clear error (recorded as `expected_failure`), and ORT must fall back.
# Environment: ADEPT_CUDA_BIN (skip the build), ADEPT_DATA (GLUE folder; else ../shared/data/glue,
# else a generated SST-2-format set), ADEPT_GPU_CHECK_QUICK=1 (tiny sizes, for testing the script),
# ADEPT_GPU_CHECK_BUDGET (seconds after which optional steps are skipped, default 420),
# ADEPT_CACHE (adept cache root).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK="$ROOT/target/gpu-check"
mkdir -p "$WORK"
REPORT="${OUT:-$WORK}/gpu-check.json"
mkdir -p "$(dirname "$REPORT")"
STEPS="$WORK/steps.jsonl"
: > "$STEPS"
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
QUICK="${ADEPT_GPU_CHECK_QUICK:-0}"
BUDGET="${ADEPT_GPU_CHECK_BUDGET:-420}"
PY=python3
export ADEPT_LOG="${ADEPT_LOG:-info,ort=warn}"

# record NAME STATUS SECONDS [FIGURES_JSON_FILE] [LOG_FILE]: one line of the report.
record() {
  "$PY" - "$@" >> "$STEPS" <<'EOF'
import json, sys, os
name, status, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
figs = sys.argv[4] if len(sys.argv) > 4 else ""
log = sys.argv[5] if len(sys.argv) > 5 else ""
row = {"step": name, "status": status, "seconds": secs}
if figs and os.path.isfile(figs):
    try:
        row["figures"] = json.load(open(figs))
    except Exception as e:
        row["figures_error"] = str(e)
if log and os.path.isfile(log) and status != "ok":
    lines = [l for l in open(log, errors="replace").read().splitlines() if l.strip()]
    row["log_tail"] = lines[-12:]
print(json.dumps(row))
EOF
  echo "== gpu-check: $1: $2 (${3}s, total $(elapsed)s)" >&2
}

# step NAME FUNCTION: runs FUNCTION with its output in $WORK/NAME.log; FUNCTION may write figures
# to $WORK/NAME.json. Exit 0 = ok, 3 = skipped, 4 = expected failure (no GPU), else failed.
step() {
  local name=$1 fn=$2 t0 rc status
  t0=$(date +%s)
  rm -f "$WORK/$name.json"
  ( "$fn" ) > "$WORK/$name.log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 3) status=skipped ;; 4) status=expected_failure ;; *) status=failed ;; esac
  record "$name" "$status" $(( $(date +%s) - t0 )) "$WORK/$name.json" "$WORK/$name.log"
  return 0
}

# ---------------------------------------------------------------------------------------------
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"
fi
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

machine() {
  "$PY" - "$GPU" > "$WORK/machine.json" <<'EOF'
import json, os, subprocess, sys
info = {"gpu_present": sys.argv[1] == "1", "cpus": os.cpu_count(),
        "compute_cap": os.environ.get("CUDA_COMPUTE_CAP")}
if info["gpu_present"]:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                        "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    info["nvidia_smi"] = q
print(json.dumps(info))
EOF
}
step machine machine

build() {
  if [ -n "${ADEPT_CUDA_BIN:-}" ]; then
    # Only the toolkit wheels (the prebuilt binary needs their libraries), no cargo build.
    ADEPT_CUDA_SKIP_CARGO=1 scripts/build-cuda.sh || return 1
  else
    scripts/build-cuda.sh || return 1
  fi
}
step build build
TOOLKIT="${ADEPT_CUDA_TOOLKIT:-$ROOT/target/cuda/toolkit}"
if [ -x "$TOOLKIT/bin/python" ]; then
  PY="$TOOLKIT/bin/python"
  CU=$("$PY" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))' 2>/dev/null || true)
fi
ADEPT="${ADEPT_CUDA_BIN:-$ROOT/target/cuda/release/adept}"
if [ ! -x "$ADEPT" ]; then
  record summary failed 0
  echo "error: no CUDA build of adept at $ADEPT (see $WORK/build.log)" >&2
  "$PY" -c 'import json,sys; print(json.dumps({"steps":[json.loads(l) for l in open(sys.argv[1])]}, indent=1))' "$STEPS" > "$REPORT"
  exit 1
fi
export LD_LIBRARY_PATH="${CU:+$CU/lib:}${LD_LIBRARY_PATH:-}"
if [ "$GPU" = 0 ] && [ -n "${CU:-}" ]; then
  # No driver here: let the binary start with the stub libcuda (all calls answer "no device").
  export LD_LIBRARY_PATH="$CU/lib/stubs:$LD_LIBRARY_PATH"
fi
# A CUDA step without a GPU: its failure is the expected outcome (exit 4) if it says why clearly.
expect_no_gpu() {
  if [ "$GPU" = 0 ]; then
    if grep -q -E "no CUDA driver|cannot open CUDA device|no CUDA support" "$1" && ! grep -q panicked "$1"; then
      return 4
    fi
    return 1
  fi
  return 1
}

fetch() {
  ADEPT_PYTHON="${ADEPT_PYTHON:-$PY}" "$ADEPT" fetch --gpu || return 1
  # cuDNN 9 and cuFFT for ONNX Runtime's CUDA provider (cudart, cuBLAS, cuRAND come with the toolkit).
  # (Only with a GPU: ~1 GB that nothing uses without one.)
  local gpu_libs=()
  [ "$GPU" = 1 ] && gpu_libs=("nvidia-cudnn-cu13==9.*" "nvidia-cufft==12.*")
  "$PY" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    "${gpu_libs[@]}" numpy safetensors || return 1
  "$PY" - > "$WORK/fetch.json" <<'EOF'
import glob, json, os, nvidia
base = list(nvidia.__path__)[0]
dirs = sorted({os.path.dirname(p) for p in glob.glob(base + "/**/libcudnn.so.9", recursive=True)
               + glob.glob(base + "/**/libcufft.so.12", recursive=True)
               + glob.glob(base + "/**/libcudart.so.13", recursive=True)})
print(json.dumps({"cuda_lib_dirs": dirs}))
EOF
}
step fetch fetch
ADEPT_CUDA_LIBS=$("$PY" -c 'import json,sys; print(":".join(json.load(open(sys.argv[1]))["cuda_lib_dirs"]))' "$WORK/fetch.json" 2>/dev/null || true)
export ADEPT_CUDA_LIBS
CACHE=$("$PY" -c 'import os; print(os.environ.get("ADEPT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "adept"))')
MODEL="$CACHE/models/all-MiniLM-L6-v2"

DATA="${ADEPT_DATA:-}"
if [ -z "$DATA" ] && [ -d ../shared/data/glue/SST-2 ]; then DATA=$(cd ../shared/data/glue && pwd); fi
data() {
  if [ -n "$DATA" ]; then echo "{\"data\": \"$DATA\", \"generated\": false}" > "$WORK/data.json"; return 0; fi
  # No GLUE here: an SST-2-format set of generated sentences (timing and CPU/CUDA parity only).
  "$PY" - "$WORK/glue/SST-2" <<'EOF'
import os, random, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
rng = random.Random(0)
good = "good great wonderful moving witty gorgeous sharp funny tender smart".split()
bad = "bad dull boring tedious clumsy flat lifeless awful stale weak".split()
filler = "the film story cast plot movie director script acting scenes ending pace music".split()
def rows(n):
    out = []
    for _ in range(n):
        y = rng.randrange(2)
        words = [rng.choice(filler) for _ in range(rng.randrange(4, 30))]
        for _ in range(rng.randrange(1, 3)):
            words.insert(rng.randrange(len(words)), rng.choice(good if y else bad))
        out.append(f"{' '.join(words)}\t{y}")
    return out
for name, n in (("train.tsv", 4000), ("dev.tsv", 872)):
    open(os.path.join(d, name), "w").write("sentence\tlabel\n" + "\n".join(rows(n)) + "\n")
EOF
  echo "{\"data\": \"$WORK/glue\", \"generated\": true}" > "$WORK/data.json"
}
step data data
[ -z "$DATA" ] && DATA="$WORK/glue"

if [ "$QUICK" = 1 ]; then TSTEPS=3; TBATCH=8; BBATCH=8; BITERS=1; NSENT=64; else TSTEPS=8; TBATCH=32; BBATCH=32; BITERS=10; NSENT=512; fi

train_on() { # DEVICE [RUN_NAME [extra flags...]]
  local dev=$1 name=${2:-run-$1}
  shift; [ $# -gt 0 ] && shift
  rm -rf "$WORK/$name"
  "$ADEPT" train --task sst2 --method adept --prompt-len 20 --rank 8 --batch-size "$TBATCH" \
    --max-len 64 --train-limit $((TBATCH * TSTEPS * 2)) --eval-limit 64 --steps "$TSTEPS" --warmup 2 \
    --eval-every "$TSTEPS" --checkpoint-every "$TSTEPS" --log-every 1 --seed 7 \
    --device "$dev" --model "$MODEL" --data "$DATA" --out "$WORK/$name" "$@"
}
train_cpu() { train_on cpu; }
train_cuda() { train_on cuda || { expect_no_gpu "$WORK/train_cuda.log"; return $?; }; }
train_cuda_bf16() { train_on cuda run-cuda-bf16 --autocast bf16 || { expect_no_gpu "$WORK/train_cuda_bf16.log"; return $?; }; }
train_cpu_bf16() { train_on cpu run-cpu-bf16 --autocast bf16; }
step train_cpu train_cpu
step train_cuda train_cuda
step train_cuda_bf16 train_cuda_bf16
step train_cpu_bf16 train_cpu_bf16

# compare_runs REFERENCE OTHER LOSS_ABS TENSOR_TOL AUTOCAST: the training loss of every step within
# LOSS_ABS, and the checkpointed tensors: for f32, every tensor (optimiser moments too) within
# TENSOR_TOL of max |Δ| / max |reference|; for bf16, each trained parameter (adapter, head) with a
# cosine to the reference of at least TENSOR_TOL (see below why not max |Δ|). Prints the figures.
compare_runs() {
  "$PY" - "$@" <<'EOF'
import json, sys
import numpy as np
from safetensors.numpy import load_file
def losses(run):
    return [json.loads(l)["loss"] for l in open(run + "/metrics.jsonl") if json.loads(l).get("event") == "train"]
a, b, tol_loss, tol_tensor, autocast = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
la, lb = losses(a), losses(b)
ta, tb = load_file(a + "/checkpoint.safetensors"), load_file(b + "/checkpoint.safetensors")
keys = [k for k in sorted(set(ta) & set(tb)) if ta[k].size and ta[k].dtype.kind == "f"]
f64 = lambda t: t.astype(np.float64).ravel()
diffs = {k: float(np.max(np.abs(f64(ta[k]) - f64(tb[k]))) / max(1e-12, float(np.max(np.abs(f64(ta[k])))))) for k in keys}
params = [k for k in keys if not k.startswith("adam.")]
cos = {k: float(np.dot(f64(ta[k]), f64(tb[k])) / max(1e-30, np.linalg.norm(f64(ta[k])) * np.linalg.norm(f64(tb[k])))) for k in params}
frob = {k: float(np.linalg.norm(f64(ta[k]) - f64(tb[k])) / max(1e-12, np.linalg.norm(f64(ta[k])))) for k in params}
loss_diff = max(abs(x - y) for x, y in zip(la, lb))
out = {"reference": a, "run": b, "autocast": autocast, "losses_reference": la, "losses_run": lb,
       "max_loss_abs_diff": loss_diff, "max_tensor_rel_diff": max(diffs.values()), "tensor_rel_diff": diffs,
       "param_cosine": cos, "param_rel_frobenius": frob, "min_param_cosine": min(cos.values())}
if autocast == "f32":
    out["tolerance"] = {"loss_abs": tol_loss, "tensor_rel": tol_tensor}
    ok = out["max_tensor_rel_diff"] < tol_tensor
else:
    out["tolerance"] = {"loss_abs": tol_loss, "min_param_cosine": tol_tensor}
    ok = out["min_param_cosine"] >= tol_tensor
out["pass"] = bool(len(la) == len(lb) and loss_diff < tol_loss and ok)
print(json.dumps(out))
sys.exit(0 if out["pass"] else 1)
EOF
}
train_parity() {
  [ -f "$WORK/run-cuda/checkpoint.safetensors" ] || return 3
  compare_runs "$WORK/run-cpu" "$WORK/run-cuda" 2e-3 1e-2 f32 > "$WORK/train_parity.json"
}
step train_parity train_parity
# bf16 autocast vs the f32 CPU run, same seed and batches. bf16 rounds each product's operands and
# result to 8 significant bits (u = 2^-8 = 3.9e-3 relative); the per-layer norms keep the network's
# error at a few u, so a step's loss moves by ~u x loss (~3e-3 at ln 2), and the adapter, trained on
# slightly different gradients, drifts a little each step: losses within 2e-2 (absolute, ~3% of
# ln 2). The tensors are not held to max |Δ|: Adam moves every coordinate by ~lr (0.3 for the
# prompt) whatever its gradient's size, so a coordinate whose gradient is near zero can step the
# other way under bf16 (3 quick steps on the CPU: prompt max |Δ| / max |ref| 0.85, from 0.9% of its
# coordinates, yet cosine 0.997, relative Frobenius error 7e-2). Each trained parameter's cosine to
# f32 must be >= 0.98; max |Δ| and the Frobenius error are recorded. crates/adept-train/tests/
# autocast.rs holds the per-step bounds and the gradients at equal parameters (cosine >= 0.99).
train_parity_bf16() { # CUDA bf16 (the GPU route) vs f32 on the CPU
  [ -f "$WORK/run-cuda-bf16/checkpoint.safetensors" ] || return 3
  compare_runs "$WORK/run-cpu" "$WORK/run-cuda-bf16" 2e-2 0.98 bf16 > "$WORK/train_parity_bf16.json"
}
train_parity_bf16_cpu() { # the same on the CPU (runs without a GPU too)
  [ -f "$WORK/run-cpu-bf16/checkpoint.safetensors" ] || return 1
  compare_runs "$WORK/run-cpu" "$WORK/run-cpu-bf16" 2e-2 0.98 bf16 > "$WORK/train_parity_bf16_cpu.json"
}
step train_parity_bf16 train_parity_bf16
step train_parity_bf16_cpu train_parity_bf16_cpu

random_bert() {
  "$PY" scripts/random-bert.py --like "$MODEL" --out "$WORK/bert-base-random" \
    --layers 12 --hidden 768 --intermediate 3072 --heads 12
}
step random_bert random_bert

bench_on() { # NAME DEVICE MODEL ITERS [extra]
  local name=$1 dev=$2 model=$3 iters=$4; shift 4
  "$ADEPT" bench --device "$dev" --methods adept --batch-size "$BBATCH" --iters "$iters" --warmup-iters 1 \
    --model "$model" --data "$DATA" --json "$WORK/$name.json" "$@"
}
# On CUDA each bench also times the step with the backbone under bf16 autocast, beside f32.
bench_minilm_cuda() { bench_on bench_minilm_cuda cuda "$MODEL" "$BITERS" --autocast bf16 || { expect_no_gpu "$WORK/bench_minilm_cuda.log"; return $?; }; }
bench_bertbase_cuda() { bench_on bench_bertbase_cuda cuda "$WORK/bert-base-random" "$BITERS" --autocast bf16 || { expect_no_gpu "$WORK/bench_bertbase_cuda.log"; return $?; }; }
bench_minilm_cpu() { bench_on bench_minilm_cpu cpu "$MODEL" "$(( BITERS < 3 ? BITERS : 3 ))"; }
step bench_minilm_cuda bench_minilm_cuda
step bench_bertbase_cuda bench_bertbase_cuda
step bench_minilm_cpu bench_minilm_cpu

bundle() {
  local run="$WORK/run-cuda"
  [ -f "$run/checkpoint.safetensors" ] || run="$WORK/run-cpu"
  rm -rf "$WORK/bundle"
  "$ADEPT" export --fold-offsets --adapter "$run" --out "$WORK/bundle" || return 1
  "$PY" - "$DATA/SST-2/dev.tsv" "$NSENT" > "$WORK/sentences.jsonl" <<'EOF'
import json, sys
rows = open(sys.argv[1]).read().splitlines()[1:]
n = int(sys.argv[2])
print("\n".join(json.dumps({"sentence": r.split("\t")[0]}) for r in (rows * (n // max(1, len(rows)) + 1))[:n]))
EOF
}
step bundle bundle

infer_on() { # DEVICE BATCH [extra]
  local dev=$1 b=$2; shift 2
  "$ADEPT" infer --device "$dev" --batch-size "$b" --bundle "$WORK/bundle" \
    --input "$WORK/sentences.jsonl" --output "$WORK/infer-$dev-b$b.jsonl" "$@"
}
# ort_speed DEVICE: sentences/s at batch 1 and 32 from the two runs' "<n> predictions in <s> s"
# log lines (adept infer's own timer: session creation excluded).
ort_speed() {
  "$PY" - "$WORK/ort_$1.log" > "$WORK/ort_$1.json" <<'EOF'
import json, re, sys
runs = re.findall(r"(\d+) predictions in ([0-9.]+) s", open(sys.argv[1], errors="replace").read())
print(json.dumps({f"b{b}_sentences_per_s": round(int(n) / max(float(t), 1e-9), 1)
                  for (n, t), b in zip(runs, (1, 32))}))
EOF
}
ort_cpu() { infer_on cpu 1 && infer_on cpu 32 && ort_speed cpu; }
ort_cuda() {
  { infer_on cuda 1 --require-device && infer_on cuda 32 --require-device && ort_speed cuda; } || {
    expect_no_gpu "$WORK/ort_cuda.log"; local rc=$?
    # Without a GPU: the same request without --require-device falls back to the CPU, saying why.
    if [ $rc = 4 ] || [ "$GPU" = 0 ]; then
      infer_on cuda 32 > "$WORK/ort_fallback.log" 2>&1 && grep -q "running on the CPU" "$WORK/ort_fallback.log" && return 4
    fi
    return 1
  }
}
step ort_cpu ort_cpu
step ort_cuda ort_cuda

ort_parity() {
  for f in infer-cpu-b1 infer-cpu-b32 infer-cuda-b1 infer-cuda-b32; do
    [ -f "$WORK/$f.jsonl" ] || { echo "skipped: no $f.jsonl"; return 3; }
  done
  "$PY" - "$WORK" > "$WORK/ort_parity.json" <<'EOF'
import json, re, sys
w = sys.argv[1]
def logits(p):
    return [json.loads(l)["logits"] for l in open(p) if l.strip()]
out = {}
for b in (1, 32):
    c, g = logits(f"{w}/infer-cpu-b{b}.jsonl"), logits(f"{w}/infer-cuda-b{b}.jsonl")
    assert len(c) == len(g), (len(c), len(g))
    out[f"max_logit_abs_diff_b{b}"] = max(abs(x - y) for rc, rg in zip(c, g) for x, y in zip(rc, rg))
log = open(f"{w}/ort_cuda.log", errors="replace").read()
# ONNX Runtime warns when it places nodes on the CPU instead of the CUDA provider.
out["ort_nodes_off_cuda_warning"] = bool(re.search(r"not assigned to the preferred execution provider", log))
out["tolerance"] = 1e-4
out["pass"] = max(out["max_logit_abs_diff_b1"], out["max_logit_abs_diff_b32"]) < 1e-4
print(json.dumps(out))
sys.exit(0 if out["pass"] else 1)
EOF
}
step ort_parity ort_parity

pytorch() {
  if [ "$(elapsed)" -gt "$BUDGET" ]; then echo "skipped: past the ${BUDGET}s budget"; return 3; fi
  [ "$GPU" = 1 ] || { echo "skipped: no GPU"; return 3; }
  local venv="$WORK/torchenv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || return 1
  timeout $(( BUDGET + 60 - $(elapsed) )) "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    torch transformers || { echo "skipped: torch did not install in time"; return 3; }
  "$venv/bin/python" -c 'import torch; assert torch.cuda.is_available()' || return 1
  ADEPT_PYTHON="$venv/bin/python" bench_on pytorch cuda "$MODEL" "$BITERS" --pytorch
}
step pytorch pytorch

"$PY" - "$STEPS" "$REPORT" "$(elapsed)" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [s["step"] for s in steps if s["status"] == "failed"]
doc = {"issue": 13, "seconds": int(sys.argv[3]), "failed": bad, "steps": steps}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
print(f"gpu-check: {len(steps)} steps, failed: {bad or 'none'}; report {sys.argv[2]}")
EOF
[ -z "$("$PY" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["failed"]))' "$REPORT")" ]
