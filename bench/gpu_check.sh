#!/usr/bin/env bash
# gencraft on a GPU: training (bf16 autocast beside float32), decoding (batch 1 and batched, beside
# transformers), DCGAN training and the server, each on CUDA, each printing its tok/s or img/s.
#
#   bench/gpu_wheels.sh                      # here, with network: wheels of what the GPU machine lacks -> .whl/
#   bench/gpu_check.sh                       # there: installs .whl/ into /tmp/site, runs every step
#   bench/gpu_check.sh --device cpu          # a dry run on a machine without a GPU (tiny sizes)
#   bench/gpu_check.sh --steps env,generate  # some steps only
#
# Every step runs in a process of its own under a time limit, so a step that fails or hangs costs
# only its own figures: the others still print theirs, and a summary follows. Lines go to stdout and
# $OUT/summary.txt (OUT defaults to bench/out/gpu_check), figures as JSON lines to
# $OUT/results.jsonl, each step's log to $OUT/log.txt. The steps stop within 6 minutes together
# (--budget SECONDS); installing the wheels adds ~20 s once. Training text: tinyshakespeare from
# .whl/data/ (gpu_wheels.sh copies it there) or /work/shared/data/, else gencraft's bundled corpus.
# Exit status: 0 every step passed, 1 some failed, 2 bad usage or --device cuda without CUDA.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DEVICE=cuda
STEPS=
BUDGET=360  # seconds for all steps together
usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=${2:-}; shift 2 || { echo "gpu_check: --device needs a value (cuda or cpu)" >&2; exit 2; } ;;
    --steps) STEPS=${2:-}; shift 2 || { echo "gpu_check: --steps needs a value" >&2; exit 2; } ;;
    --budget) BUDGET=${2:-}; shift 2 || { echo "gpu_check: --budget needs seconds" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# compiling for a CPU takes minutes on 2 cores: the dry run leaves it out unless asked
[ -n "$STEPS" ] || { STEPS=env,train,generate,image,serve; [ "$DEVICE" = cuda ] && STEPS+=,compile; }
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device $DEVICE: expected cuda or cpu" >&2; exit 2 ;; esac
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check: --budget $BUDGET: expected whole seconds" >&2; exit 2 ;; esac
declare -A LIMIT=([env]=60 [train]=100 [generate]=90 [image]=90 [serve]=60 [compile]=120)
for s in ${STEPS//,/ }; do
  [ -n "${LIMIT[$s]:-}" ] || { echo "gpu_check: --steps: unknown step $s (expected ${!LIMIT[*]})" >&2; exit 2; }
done

OUT_DIR=${OUT:-$ROOT/bench/out/gpu_check}
mkdir -p "$OUT_DIR" || exit 2
: >"$OUT_DIR/summary.txt"; : >"$OUT_DIR/results.jsonl"; : >"$OUT_DIR/log.txt"
say() { echo "$*" | tee -a "$OUT_DIR/summary.txt"; }

if [ "$DEVICE" = cuda ]; then
  if ! msg=$("$PY" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit("torch %s (CUDA %s) sees no CUDA device" % (torch.__version__, torch.version.cuda or "none"))' 2>&1); then
    echo "gpu_check: --device cuda: ${msg##*$'\n'}; run with --device cpu for a dry run" >&2
    exit 2
  fi
fi

# The wheels of packages the GPU machine lacks (it has no network; bench/gpu_wheels.sh fetched them
# for Python 3.12, that machine's): installed once per machine, ahead of its own packages.
SITE=/tmp/site
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  if [ "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != 3.12 ]; then
    echo "wheels in .whl/ are for Python 3.12, not $PY's: not installed" >>"$OUT_DIR/log.txt"
  else
    if [ ! -e "$SITE/.gencraft-wheels" ]; then
      t=$SECONDS
      if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
          "$ROOT"/.whl/*.whl >>"$OUT_DIR/log.txt" 2>&1; then
        echo "gpu_check: installing the wheels in .whl/ failed (see $OUT_DIR/log.txt)" >&2; exit 2
      fi
      touch "$SITE/.gencraft-wheels"
      say "wheels: $(ls "$ROOT"/.whl/*.whl | wc -l) installed into $SITE in $((SECONDS - t)) s"
    fi
    export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH#"$ROOT/src"}"
  fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gencraft-gpu-check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
say "gpu_check on $DEVICE, $(date -u +%FT%TZ), steps $STEPS, budget ${BUDGET} s"
start=$SECONDS
failed=()
for s in ${STEPS//,/ }; do
  left=$((BUDGET - (SECONDS - start)))
  limit=${LIMIT[$s]}
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    say "SKIP $s: the ${BUDGET} s budget is spent"; failed+=("$s"); continue
  fi
  echo "==== $s (limit ${limit} s)" >>"$OUT_DIR/log.txt"
  t=$SECONDS
  timeout -k 10 "$limit" "$PY" "$ROOT/bench/gpu_check.py" "$s" --device "$DEVICE" --work "$WORK/$s" \
      --out "$OUT_DIR" 2>>"$OUT_DIR/log.txt" | tee -a "$OUT_DIR/summary.txt"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why="stopped at its ${limit} s limit"
    else why="exit $rc: $(grep -v '^\s*$' "$OUT_DIR/log.txt" | tail -n 1 | cut -c1-300)"; fi
    say "FAIL $s ($((SECONDS - t)) s, $why)"
    failed+=("$s")
  fi
done
if [ ${#failed[@]} -eq 0 ]; then
  say "gpu_check: all steps passed in $((SECONDS - start)) s"
  exit 0
fi
say "gpu_check: failed: ${failed[*]} ($((SECONDS - start)) s; details in $OUT_DIR/log.txt)"
exit 1
