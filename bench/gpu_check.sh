#!/bin/sh
# The GPU check of issue 21 (bench/gpu_check.py): bench/gpu_check.sh [--smoke] [--steps N] [--size PX]
exec python "$(dirname "$0")/gpu_check.py" "$@"
