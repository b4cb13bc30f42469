#!/usr/bin/env bash
# Install the peer spiking libraries that benchmarks/speed.py compares against and the adapter tests read
# (tests/test_adapters.py, .ci/run): snnTorch, Norse, SpikingJelly, and NIR (nir, nirtorch).
#
# Why --no-deps: a plain `pip install norse` or `pip install spikingjelly` resolves torch to the newest CUDA build
# (GBs) and replaces the torch already installed. Here each peer is installed without dependencies, followed by
# only its light imports (Norse: numpy nir nirtorch; SpikingJelly: loguru packaging tqdm; snnTorch declares none).
# torch itself is never touched: the script checks its version before and after and fails if it changed.
#
# Usage: bash benchmarks/install_peers.sh            (into the active Python environment)
#        PYTHON=/path/to/python bash benchmarks/install_peers.sh
# These are test and benchmark tools, never a dependency of stablernn (stablernn.adapters reads their modules by
# type name and never imports them).
set -euo pipefail

PYTHON="${PYTHON:-python}"
torch_version() { "$PYTHON" -c 'import torch; print(torch.__version__)'; }

before="$(torch_version)"
echo "torch before: $before"

"$PYTHON" -m pip install --no-deps snntorch norse spikingjelly
# Light imports only; --no-deps again so none of them can pull torch in.
"$PYTHON" -m pip install --no-deps numpy nir nirtorch loguru packaging tqdm

after="$(torch_version)"
echo "torch after: $after"
if [[ "$before" != "$after" ]]; then
  echo "error: torch changed from $before to $after; reinstall the original torch build" >&2
  exit 1
fi

"$PYTHON" - <<'PY'
import importlib
import importlib.metadata

for name in ("snntorch", "norse", "spikingjelly", "nir", "nirtorch"):
    try:
        importlib.import_module(name)
        print(f"{name} {importlib.metadata.version(name)}: ok")
    except Exception as exc:  # report, do not fail: the benchmark skips peers that do not import
        print(f"{name}: import failed ({type(exc).__name__}: {exc})")
PY
