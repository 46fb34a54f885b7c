"""Generated detection scenes: exact masks and boxes, occlusion, determinism, splits, COCO export."""

import json

import numpy as np
import pytest

from handgrad.data.scenes import DetectionScenes, SceneConfig, contact_sheet, export_coco, scene_statistics
from handgrad.data.sprites import DISTRACTOR_CLASSES, LABEL_CLASSES, BackgroundBank, SpriteBank, resize_sprite
from handgrad.vision.mask import decode_rle, mask_to_box
from tests._markers import needs_fashion_mnist

pytestmark = needs_fashion_mnist


@pytest.fixture(scope="module")
def train():
    return DetectionScenes("train", size=60)


def test_class_lists():
    assert len(LABEL_CLASSES) >= 10 and len(DISTRACTOR_CLASSES) >= 2
    names = [c.name for c in LABEL_CLASSES + DISTRACTOR_CLASSES]
    assert len(set(names)) == len(names)
    assert {c.source for c in LABEL_CLASSES} == {"emoji", "fashion"}


def test_sprites_have_exact_masks():
    rng = np.random.default_rng(0)
    bank = SpriteBank("val")
    for k in range(len(bank.classes)):
        s = bank.sample(rng, k, 30, 20)
        assert s.rgb.shape == (30, 20, 3) and s.mask.shape == (30, 20) and s.mask.dtype == bool
        assert 0.15 < s.mask.mean() <= 1.0
    d = bank.sample_distractor(rng, 16, 16)
    assert d.mask.any()
    r = resize_sprite(s, 7, 5)
    assert r.mask.shape == (7, 5)
    with pytest.raises(ValueError, match="class index 99"):
        bank.sample(rng, 99, 10, 10)


def test_backgrounds_are_split_and_real():
    tr, te = BackgroundBank("train"), BackgroundBank("test")
    assert len(tr) >= 5 and len(te) >= 1
    assert not set(tr.paths) & set(te.paths)
    img = tr.sample(np.random.default_rng(0), (64, 80))
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8 and img.std() > 5


def test_scene_annotations_are_exact(train):
    for i in range(20):
        img, t = train[i]
        H, W = img.shape[:2]
        n = len(t["labels"])
        assert img.shape == (256, 256, 3) and t["masks"].shape == (n, H, W)
        assert 1 <= n <= 8 and np.all((t["labels"] >= 1) & (t["labels"] <= 12))
        # visible masks are disjoint and each box is the tight box of its mask
        assert t["masks"].sum(0).max() <= 1
        for b, m in zip(t["boxes"], t["masks"]):
            assert m.any()
            np.testing.assert_array_equal(b, mask_to_box(m))
        assert np.all(t["visible"][t["occluded"]] < 1) and np.all(t["visible"][~t["occluded"]] == 1)
        assert np.all(t["visible"] >= SceneConfig().min_visible - 1e-6)


def test_scene_statistics_meet_the_spec(train):
    st = scene_statistics(train)
    assert st["partly_hidden"] >= 0.2
    assert 2 <= st["objects_per_scene"] <= 8 and st["max_side"] <= 96


def test_determinism_and_splits(train):
    again = DetectionScenes("train", size=60)
    for i in (0, 7, 59):
        a, ta = train[i]
        b, tb = again[i]
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta["boxes"], tb["boxes"])
    other_seed = DetectionScenes("train", size=5, seed=1)
    assert not np.array_equal(other_seed[0][0], train[0][0])
    test = DetectionScenes("test", size=5)
    assert not np.array_equal(test[0][0], train[0][0])
    with pytest.raises(IndexError):
        train[60]
    with pytest.raises(ValueError, match="split must be one of"):
        DetectionScenes("dev")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_export_roundtrip_and_contact_sheet(train, tmp_path):
    path = export_coco(train, tmp_path / "coco", n=5)
    doc = json.loads(path.read_text())
    assert len(doc["images"]) == 5 and len(doc["categories"]) == 12
    assert (tmp_path / "coco" / doc["images"][0]["file_name"]).exists()
    img0 = [a for a in doc["annotations"] if a["image_id"] == 0]
    _, t = train[0]
    assert len(img0) == len(t["labels"])
    for a, b, m in zip(img0, t["boxes"], t["masks"]):
        np.testing.assert_array_equal(decode_rle(a["segmentation"]), m)
        np.testing.assert_allclose(a["bbox"], [b[0], b[1], b[2] - b[0], b[3] - b[1]])
    from handgrad.data.coco import CocoDetection

    back_img, back = CocoDetection(tmp_path / "coco", path, with_masks=True)[0]
    np.testing.assert_array_equal(back_img, train[0][0])
    np.testing.assert_array_equal(back["masks"], t["masks"])
    np.testing.assert_array_equal(back["labels"], t["labels"])
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[0]))[0]
    np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), t["masks"][0])
    sheet = contact_sheet(train, tmp_path / "sheet.png", n=4, cols=2)
    from PIL import Image

    assert Image.open(sheet).size == (2 * 260, 2 * 260)
