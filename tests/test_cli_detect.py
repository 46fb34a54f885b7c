"""``handgrad detect``: a detector folder written here (random weights), images, errors as one line."""

import json

import numpy as np
import pytest
from PIL import Image

from handgrad.cli.main import main
from handgrad.serialization import save
from handgrad.vision.models import FastRCNN


@pytest.fixture()
def detector(tmp_path):
    d = tmp_path / "det"
    d.mkdir()
    classes = ["__background__", "a", "b"]
    save(FastRCNN(3).state_dict(), d / "detector.safetensors")
    (d / "detector.json").write_text(json.dumps({"kind": "fast-rcnn", "classes": classes, "pooling": "pool",
                                                 "proposals": 50, "proposal_mode": "single"}))
    img = np.zeros((64, 80, 3), np.uint8)
    img[10:40, 20:50] = (200, 40, 40)
    Image.fromarray(img).save(tmp_path / "x.png")
    return d


def test_detect_writes_png_and_json(detector, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["detect", str(detector), str(tmp_path / "x.png"), "--out", str(out), "--score", "0", "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["image"].endswith("x.png") and isinstance(printed[0]["detections"], list)
    assert (out / "x.png").exists() and json.loads((out / "detections.json").read_text()) == printed
    for d in printed[0]["detections"]:
        assert d["label"] in ("a", "b") and len(d["box"]) == 4


@pytest.mark.parametrize("case", ["missing-model", "not-image", "missing-image", "other-kind", "bad-score"])
def test_detect_errors_are_one_line(detector, tmp_path, capsys, case):
    img = str(tmp_path / "x.png")
    args = {"missing-model": [str(tmp_path / "nope"), img],
            "not-image": [str(detector), str(detector / "detector.json")],
            "missing-image": [str(detector), str(tmp_path / "none.png")],
            "other-kind": [str(detector), img],
            "bad-score": [str(detector), img, "--score", "3"]}[case]
    if case == "other-kind":
        (detector / "detector.json").write_text(json.dumps({"kind": "lenet", "classes": []}))
    rc = main(["detect", *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("handgrad detect: error:") and "\n" not in err and "Traceback" not in err
