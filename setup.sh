#!/usr/bin/env bash
# Installs handgrad and the real data it trains on (nothing is downloaded at run time).
#   bash setup.sh          the library, its run-time dependencies and the data
#   bash setup.sh --test   the same plus the test extras (pytest, PyTorch 2.13.0 CPU as the oracle)
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

# Debian's Fashion-MNIST (the four original IDX files in /usr/share/datasets/fashion-mnist).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup.sh: no apt-get; point HANDGRAD_FASHION_MNIST at a folder with the four IDX files" >&2
    fi
fi

python -m pip install -q -e ".${extras}"
python -m handgrad.data.fetch_bundled || true
