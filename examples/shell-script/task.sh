#!/usr/bin/env bash
set -euo pipefail
echo "step 1: hello, ${target}"
echo "step 2: python is $(python -c 'import sys; print(sys.version.split()[0])')"
echo "step 3: done"
