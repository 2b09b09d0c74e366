#!/usr/bin/env bash
# Wheels of the packages gencraft's GPU check needs that the GPU machine lacks, for CPython 3.12 on
# manylinux x86-64, downloaded here (it has no network) into .whl/ (git-ignored), plus
# tinyshakespeare in .whl/data/ for the training step. bench/gpu_check.sh installs them there.
#
#   bench/gpu_wheels.sh            # then carry .whl to the GPU machine and run bench/gpu_check.sh
#
# The list: what the check's steps import (server, training, image training, decoding, data
# prepare), less what that machine's image already holds (/work/.library/device/KINDS.md lists it:
# torch, numpy, transformers, tokenizers, safetensors, scikit-learn, typer, rich, httpx, ...).
# Versions are those of the environment the tests run in (PYTHON's), so the GPU runs the code that
# passed here; a package missing from it gets the newest release.
set -eu
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
PACKAGES=(
  fastapi starlette pydantic pydantic-core annotated-types typing-inspection typing-extensions opentelemetry-api
  uvicorn sqlalchemy alembic mako                                   # the server and its content library
  cryptography cffi pycparser alt-profanity-check zhconv           # guard: signing, moderation
  datasketch                                                        # data prepare: near-duplicate removal
  jsonschema jsonschema-specifications referencing rpds-py llguidance  # structured generation
)
DEST=$ROOT/.whl
mkdir -p "$DEST/data"
specs=$("$PY" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
EOF
)
rm -f "$DEST"/*.whl  # one version of each: two stop the whole install there
# pip matches manylinux_2_N exactly: list the N that wheels of these packages are built for
plats=()
for p in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 \
         manylinux_2_35 manylinux1; do
  plats+=(--platform "${p}_x86_64")
done
quiet() { grep -v "^WARNING: Location" >&2 || true; }  # this machine's pip config names absent local indexes
for spec in $specs; do
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${plats[@]}" -d "$DEST" "$spec" 2> >(quiet); then
    # no wheel on the index (zhconv 1.4.3 is an sdist): build one here, which works for pure-Python packages
    echo "gpu_wheels: no wheel of $spec to download; building one" >&2
    "$PY" -m pip wheel -q --no-deps -w "$DEST" "$spec" 2> >(quiet)
    unzip -l "$DEST/$(ls "$DEST" | grep -i "^${spec%%=*}-" | head -n 1)" | grep -q '\.so' \
      && { echo "gpu_wheels: $spec has no cp312 wheel and is not pure Python" >&2; exit 1; }
  fi
done
for f in /work/shared/data/tinyshakespeare.txt "${GENCRAFT_SHARED_DATA:-/nonexistent}/tinyshakespeare.txt"; do
  if [ -f "$f" ]; then cp -f "$f" "$DEST/data/"; break; fi
done
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (carry it: 64 MiB at most travel)"
