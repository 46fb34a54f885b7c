"""COCO and Pascal VOC loaders on small files the tests write; clear errors for bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from handgrad.data.coco import CocoDetection
from handgrad.data.voc import VOCDetection
from handgrad.vision.mask import encode_rle


def _coco(tmp_path, anns=None, cats=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i, (w, h) in enumerate([(40, 30), (20, 20)]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    m = np.zeros((30, 40), bool)
    m[5:15, 10:30] = True
    doc = {"images": [{"id": 7, "file_name": "0.png", "height": 30, "width": 40},
                      {"id": 9, "file_name": "1.png", "height": 20, "width": 20}],
           "annotations": anns if anns is not None else [
               {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "area": 200.0, "iscrowd": 0,
                "segmentation": encode_rle(m)},
               {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 6], "area": 24.0, "iscrowd": 0,
                "segmentation": [[0, 0, 4, 0, 4, 6, 0, 6]]}],
           "categories": cats if cats is not None else [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}]}
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(doc))
    return p, m


def test_coco_loader_reads_boxes_labels_masks(tmp_path):
    p, m = _coco(tmp_path)
    ds = CocoDetection(tmp_path / "img", p, with_masks=True)
    assert len(ds) == 2 and ds.classes == ["__background__", "cat", "dog"] and ds.cat_ids == [1, 3]
    img, t = ds[0]
    assert img.shape == (30, 40, 3) and t["image_id"] == 7
    np.testing.assert_array_equal(t["boxes"], [[10, 5, 30, 15], [0, 0, 4, 6]])
    np.testing.assert_array_equal(t["labels"], [2, 1])
    np.testing.assert_array_equal(t["masks"][0], m)
    assert t["masks"][1][:6, :4].all() and t["masks"][1].sum() >= 24
    img, t = ds[1]  # an image with no objects
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 20, 20)


@pytest.mark.parametrize("ann,msg", [
    ({"id": 5, "image_id": 7, "category_id": 3, "bbox": [10, 5, -2, 10]}, r"annotation 5 .*x2 < x1"),
    ({"id": 6, "image_id": 7, "category_id": 3, "bbox": [10, float("nan"), 2, 10]}, r"annotation 6 .*finite"),
    ({"id": 8, "image_id": 7, "category_id": 42, "bbox": [1, 1, 2, 2]}, r"annotation 8 has category_id 42"),
    ({"id": 9, "image_id": 99, "category_id": 3, "bbox": [1, 1, 2, 2]}, r"unknown image id 99"),
    ({"id": 10, "image_id": 7, "bbox": [1, 1, 2, 2]}, r"annotation 10 lacks"),
])
def test_coco_loader_bad_annotations(tmp_path, ann, msg):
    p, _ = _coco(tmp_path, anns=[ann])
    with pytest.raises(ValueError, match=msg):
        CocoDetection(tmp_path / "img", p)


def test_coco_loader_corrupt_and_missing_files(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"images": [1, 2')
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDetection(tmp_path, p)
    p.write_text('{"images": []}')
    with pytest.raises(ValueError, match="'annotations'"):
        CocoDetection(tmp_path, p)
    with pytest.raises(FileNotFoundError, match="no such annotation file"):
        CocoDetection(tmp_path, tmp_path / "nope.json")
    p, _ = _coco(tmp_path)
    (tmp_path / "img" / "0.png").write_bytes(b"not an image")
    ds = CocoDetection(tmp_path / "img", p)
    with pytest.raises(ValueError, match="not a readable image"):
        ds[0]


def _voc(tmp_path, objects, name="a"):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
    objs = "".join(
        f"<object><name>{c}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for c, d, b in objects)
    (tmp_path / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.jpg</filename><size><width>40</width><height>30</height></size>{objs}"
        "</annotation>")


def test_voc_loader(tmp_path):
    _voc(tmp_path, [("dog", 0, (11, 6, 30, 15)), ("cat", 1, (1, 1, 4, 6))])
    _voc(tmp_path, [], name="b")  # no objects
    (tmp_path / "ImageSets/Main/val.txt").write_text("a\nb\n")
    ds = VOCDetection(tmp_path, "val")
    img, t = ds[0]
    assert img.shape == (30, 40, 3)
    np.testing.assert_array_equal(t["boxes"], [[10, 5, 30, 15], [0, 0, 4, 6]])
    np.testing.assert_array_equal(t["labels"], [12, 8])  # VOC order: cat is 8th, dog 12th
    np.testing.assert_array_equal(t["difficult"], [False, True])
    assert ds[1][1]["boxes"].shape == (0, 4)
    own = VOCDetection(tmp_path, "val", classes=("cat", "dog"))
    np.testing.assert_array_equal(own[0][1]["labels"], [2, 1])


@pytest.mark.parametrize("obj,msg", [
    (("dog", 0, (30, 6, 11, 15)), "xmax < xmin"),
    (("unicorn", 0, (1, 1, 4, 4)), "class 'unicorn', not in the label set"),
    (("dog", 0, ("x", 1, 4, 4)), "non-numeric"),
    (("dog", 0, ("nan", 1, 4, 4)), "NaN"),
])
def test_voc_loader_bad_input(tmp_path, obj, msg):
    _voc(tmp_path, [obj])
    with pytest.raises(ValueError, match=msg):
        VOCDetection(tmp_path)


def test_voc_corrupt_xml(tmp_path):
    _voc(tmp_path, [])
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"VOCDetection\(a.xml\): corrupt XML"):
        VOCDetection(tmp_path)
    with pytest.raises(FileNotFoundError, match="no Annotations"):
        VOCDetection(tmp_path / "nowhere")
