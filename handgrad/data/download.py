"""Checksum-verified downloads for users with internet access (never called at import or by default).

``download_file`` streams a URL into a temporary file in the destination directory while hashing it,
compares the SHA-256 (and the size, when known) with the expected values, and only then renames the file
into place. A mismatch deletes the temporary file and raises ``ChecksumError``: nothing is left behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChecksumError", "Resource", "download_file", "download_resources", "sha256_of"]

_CHUNK = 1 << 20


class ChecksumError(OSError):
    """A downloaded file whose SHA-256 or size differs from the published one."""


@dataclass(frozen=True)
class Resource:
    """One file to fetch: its name (appended to each mirror URL), SHA-256, size in bytes and MD5.

    ``md5`` is carried only for cross-reference with torchvision's lists; the check is SHA-256 + size.
    """

    filename: str
    sha256: str
    size: int | None = None
    md5: str | None = None


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: str | os.PathLike[str], sha256: str, size: int | None = None,
                  timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` if its SHA-256 (and size) match; atomic (temp file + rename).

    Raises:
        ChecksumError: the bytes do not match; no file is left at ``dest`` or in its directory.
        urllib.error.URLError / OSError: the download itself failed; likewise nothing is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.sha256()
        n = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if size is not None and n != size:
            raise ChecksumError(f"download: {url} gave {n} bytes, expected {size}; the file was discarded")
        if digest != sha256.lower():
            raise ChecksumError(
                f"download: checksum mismatch for {url}: SHA-256 {digest}, expected {sha256.lower()}; "
                "the file was discarded"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def download_resources(root: str | os.PathLike[str], resources: Sequence[Resource], mirrors: Sequence[str],
                       what: str, timeout: float = 60.0) -> list[Path]:
    """Fetch every resource missing from ``root``, trying each mirror (a URL prefix) in order.

    A file already in ``root`` is kept if its SHA-256 matches; otherwise it is fetched again.
    Raises ``OSError`` (``ChecksumError`` when every failure was a mismatch) listing each mirror's failure.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for res in resources:
        dest = root / res.filename
        if dest.is_file() and sha256_of(dest) == res.sha256:
            paths.append(dest)
            continue
        failures: list[BaseException] = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + res.filename
            try:
                paths.append(download_file(url, dest, res.sha256, res.size, timeout=timeout))
                break
            except (urllib.error.URLError, ChecksumError, OSError) as e:
                failures.append(e)
        else:
            kind = ChecksumError if failures and all(isinstance(e, ChecksumError) for e in failures) else OSError
            lines = "\n  ".join(str(e) for e in failures) or "no mirrors given"
            raise kind(f"{what}: could not download {res.filename}:\n  {lines}")
    return paths
