"""``handgrad detect`` with Faster/Mask R-CNN folders (random weights written here): masks drawn and in the
JSON (RLE) only when the model has a mask head; the quick runs of faster-rcnn-scenes and mask-rcnn-scenes."""

import json

import numpy as np
import pytest
from PIL import Image

import handgrad as hg
from handgrad.cli.main import main
from handgrad.serialization import save
from handgrad.vision.mask import decode_rle
from handgrad.vision.models.faster_rcnn import FasterRCNN
from handgrad.vision.models.mask_rcnn import MaskRCNN


def _folder(tmp_path, kind):
    hg.manual_seed(0)
    d = tmp_path / kind
    d.mkdir()
    classes = ["__background__", "a", "b"]
    net = (MaskRCNN if kind == "mask-rcnn" else FasterRCNN)(3)
    net.cls_score.bias.array[...] = [-3.0, 3.0, -3.0]  # random weights that still detect "a" with high scores
    save(net.state_dict(), d / "detector.safetensors")
    (d / "detector.json").write_text(json.dumps({"kind": kind, "classes": classes}))
    return d


@pytest.mark.parametrize("kind", ["faster-rcnn", "mask-rcnn"])
def test_detect_draws_masks_only_for_mask_rcnn(kind, tmp_path, capsys):
    img = np.full((64, 80, 3), 90, np.uint8)
    img[10:40, 20:50] = (200, 40, 40)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = tmp_path / "out"
    rc = main(["detect", str(_folder(tmp_path, kind)), str(tmp_path / "x.png"), "--out", str(out), "--score", "0.5",
               "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    dets = printed[0]["detections"]
    assert dets and all(d["label"] == "a" for d in dets)
    assert (out / "x.png").exists()
    if kind == "mask-rcnn":
        m = decode_rle(dets[0]["mask_rle"])
        assert m.shape == (64, 80)
        # the drawn picture blends the masks: pixels inside a mask differ from a boxes-only drawing
        from handgrad.data.scenes import draw_detections

        boxes = np.array([d["box"] for d in dets])
        plain = np.asarray(draw_detections(img, boxes, np.ones(len(dets), int), ["bg", "a", "b"],
                                           np.array([d["score"] for d in dets])))
        drawn = np.asarray(Image.open(out / "x.png"))
        if m.any():
            assert (drawn != plain).any()
    else:
        assert all("mask_rle" not in d for d in dets)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["faster-rcnn-scenes", "mask-rcnn-scenes"])
def test_quick_runs(name, tmp_path, capsys):
    out = tmp_path / name
    rc = main(["run", name, "--quick", "--no-progress", "--out", str(out), "--train-scenes", "2", "--test-scenes", "1",
               "--pretrain-epochs", "0"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    r = json.loads((out / "results.json").read_text())
    for k in ("map50", "coco_map", "proposal_recall_at_0.5_top300", "stage_sec_per_image", "sec_per_image"):
        assert k in r
    assert set(r["stage_sec_per_image"]) >= {"backbone", "rpn", "nms", "head"}
    if name == "mask-rcnn-scenes":
        assert 0 <= r["mask_map50"] <= 1 and "mask" in r["stage_sec_per_image"]
    assert (out / "detections.png").exists() and "| " in (out / "results.md").read_text()
    # the saved detector is one handgrad detect reads
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "y.png")
    assert main(["detect", str(out), str(tmp_path / "y.png"), "--out", str(tmp_path / "d")]) == 0


def test_quick_run_with_a_fast_rcnn_folder_for_the_table(tmp_path, capsys):
    """faster-rcnn-scenes --fast-rcnn DIR: both detectors on the same test scene, one table."""
    from handgrad.data.scenes import DetectionScenes
    from handgrad.vision.models import FastRCNN

    classes = DetectionScenes("test", size=1).classes
    fr = tmp_path / "fast"
    fr.mkdir()
    save(FastRCNN(len(classes)).state_dict(), fr / "detector.safetensors")
    (fr / "detector.json").write_text(json.dumps({"kind": "fast-rcnn", "classes": classes, "proposals": 300,
                                                  "proposal_mode": "single"}))
    out = tmp_path / "run"
    rc = main(["run", "faster-rcnn-scenes", "--quick", "--no-progress", "--out", str(out), "--train-scenes", "2",
               "--test-scenes", "1", "--pretrain-epochs", "0", "--fast-rcnn", str(fr)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    r = json.loads((out / "results.json").read_text())
    assert r["fast_rcnn"]["selective_search_sec"] > 0 and r["speedup_vs_fast_rcnn"] > 0
    text = (out / "results.md").read_text()
    assert "Faster R-CNN (RPN)" in text and "Fast R-CNN + selective search" in text
    # a folder that is not a Fast R-CNN: one line, exit 2
    (fr / "detector.json").write_text(json.dumps({"kind": "rcnn", "classes": classes}))
    rc = main(["run", "faster-rcnn-scenes", "--quick", "--no-progress", "--out", str(tmp_path / "r2"),
               "--train-scenes", "2", "--test-scenes", "1", "--pretrain-epochs", "0", "--fast-rcnn", str(fr)])
    err = capsys.readouterr().err
    assert rc == 2 and "not fast-rcnn" in err and "Traceback" not in err


def test_mask_rcnn_run_from_a_faster_rcnn_run(tmp_path, capsys):
    """mask-rcnn-scenes --init <faster-rcnn run>: every weight but the fresh mask head is loaded (an unknown
    or missing weight elsewhere is still a one-line error); the mask head's shape goes into detector.json and
    handgrad detect rebuilds it from there."""
    from handgrad.data.scenes import DetectionScenes
    from handgrad.errors import ExperimentError
    from handgrad.experiments._detection import load_init

    classes = DetectionScenes("test", size=1).classes
    hg.manual_seed(1)
    fr = tmp_path / "faster"
    fr.mkdir()
    net = FasterRCNN(len(classes))
    save(net.state_dict(), fr / "detector.safetensors")
    (fr / "detector.json").write_text(json.dumps({"kind": "faster-rcnn", "classes": classes}))
    m = load_init(str(fr), lambda: MaskRCNN(len(classes), mask_convs=1), "mask-rcnn", fresh_prefixes=("mask_head.",))
    ours = m.state_dict()
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(np.asarray(ours[k]), np.asarray(v), err_msg=k)
    with pytest.raises(ExperimentError, match="not a mask-rcnn detector"):
        load_init(str(fr), lambda: MaskRCNN(len(classes)), "mask-rcnn")  # without the fresh head: missing weights
    with pytest.raises(ExperimentError, match="not a mask-rcnn detector"):
        load_init(str(fr), lambda: MaskRCNN(len(classes), hidden=8), "mask-rcnn", fresh_prefixes=("mask_head.",))

    out = tmp_path / "run"
    rc = main(["run", "mask-rcnn-scenes", "--quick", "--no-progress", "--out", str(out), "--train-scenes", "2",
               "--test-scenes", "1", "--init", str(fr), "--mask-convs", "1", "--mask-channels", "8"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    meta = json.loads((out / "detector.json").read_text())
    assert meta["kind"] == "mask-rcnn" and (meta["mask_convs"], meta["mask_channels"]) == (1, 8)
    r = json.loads((out / "results.json").read_text())
    assert 0 <= r["mask_map50_gt_boxes"] <= 1 and 0 <= r["mask_iou_gt_boxes"] <= 1 and r["lr_schedule"] == "cosine"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "y.png")
    assert main(["detect", str(out), str(tmp_path / "y.png"), "--out", str(tmp_path / "d")]) == 0


def test_cosine_learning_rate_over_the_steps():
    from handgrad.data.scenes import DetectionScenes
    from handgrad.experiments.faster_rcnn_scenes import FasterRCNNUpdater
    from handgrad.optim import SGD

    ds = DetectionScenes("train", size=2)
    m = FasterRCNN(ds.num_classes)
    u = FasterRCNNUpdater(m, SGD(m.parameters(), lr=0.1), ds, 0, total_steps=4)
    lrs = []
    u.loss_and_output = lambda batch: (sum((p * 0.0).sum() for p in m.parameters()), None, None)
    for _ in range(5):
        u.update([0])
        lrs.append(u.optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, 0.1 * (1 + np.cos(np.pi * np.array([0, 1, 2, 3, 4]) / 4)) / 2, atol=1e-15)


def test_train_start_picks_the_scenes_and_is_checked(tmp_path, capsys):
    from handgrad.data.scenes import DetectionScenes
    from handgrad.experiments.faster_rcnn_scenes import FasterRCNNUpdater
    from handgrad.optim import SGD

    ds = DetectionScenes("train", size=5)
    m = FasterRCNN(ds.num_classes)
    u = FasterRCNNUpdater(m, SGD(m.parameters(), lr=0.1), ds, 0, start=3)
    seen = []

    def losses(x, targets, rng):  # record which scene reached the model
        seen.extend(t["labels"].tolist() for t in targets)
        return {}, {"roi_labels": 0}, None

    m.losses = losses
    u.loss_and_output(np.array([1]))
    assert seen == [ds[4][1]["labels"].tolist()]
    rc = main(["run", "faster-rcnn-scenes", "--quick", "--no-progress", "--out", str(tmp_path / "r"),
               "--train-scenes", "2", "--train-start", "1999"])
    err = capsys.readouterr().err
    assert rc == 2 and "--train-start <= 2000 - --train-scenes (1998), got 1999" in err
    assert len(err.strip().splitlines()) == 1
