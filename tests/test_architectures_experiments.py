"""Quick end-to-end runs of fabric-fashion, fabric-segment and msdnet-fashion (files written, numbers in range and
consistent), and their one-line errors (a fabric too deep for the input, exits that do not exist)."""

from __future__ import annotations

import json

import numpy as np
from _markers import needs_fashion_mnist

import handgrad as hg
from handgrad.cli.main import main
from handgrad.experiments.fabric_segment import class_weights, segmentation_scores


def _run(tmp_path, *args):
    out = tmp_path / args[0]
    assert main(["run", *args, "--quick", "--no-progress", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text()), out


@needs_fashion_mnist
def test_fabric_fashion_quick(tmp_path):
    r, out = _run(tmp_path, "fabric-fashion")
    assert (out / "trellis.png").stat().st_size > 5_000
    assert 0 <= r["test_accuracy"] <= 1 and r["target_met"] == (r["test_accuracy"] >= 0.92)
    assert r["fabric"]["multiply_adds"] > 0 and r["plain_cnn"]["multiply_adds"] > 0
    # the baseline path is widened to a similar weight count
    assert abs(r["plain_cnn"]["parameters"] - r["fabric"]["parameters"]) < 0.3 * r["fabric"]["parameters"]
    assert r["strongest_path"]["scales"][-1] == 2  # classification: the path ends at the coarsest scale
    costs = [row["multiply_adds"] for row in r["pruned"]]
    assert costs == sorted(costs, reverse=True) and costs[0] <= r["fabric"]["multiply_adds"]
    assert all(row["finetune_steps"] == 3 and 0 <= row["finetuned_test_accuracy"] <= 1 for row in r["pruned"])
    shares = r["edge_node_shares"]  # each node's live inputs share 1
    nodes = {}
    for k, v in shares.items():  # "layer:from->to"
        node = (k.split(":")[0], k.split("->")[1])
        nodes[node] = nodes.get(node, 0.0) + v
    assert nodes and all(abs(t - 1) < 0.01 for t in nodes.values())
    signal = r["edge_signal_shares"]  # the same nodes, shares of the RMS each edge adds into the node's sum
    assert set(signal) == set(shares) and all(0 < v <= 1 for v in signal.values())
    assert len(r["strongest_signal_path"]) == r["config"]["layers"] and r["strongest_signal_path"][-1] == 2


def test_fabric_segment_quick(tmp_path):
    r, out = _run(tmp_path, "fabric-segment")
    assert (out / "trellis.png").exists() and (out / "unet_path" / "learning_curves.png").exists()
    for name in ("fabric", "unet_path", "plain_cnn"):
        assert 0 <= r[name]["pixel_accuracy"] <= 1 and 0 <= r[name]["mean_iou"] <= 1
    assert r["strongest_path"]["scales"][-1] == 0  # segmentation: the path ends at the finest scale
    assert r["strongest_signal_path"][-1] == 0 and r["edge_signal_shares"]
    assert r["unet_path"]["path"] == [0, 1, 0]
    for name in ("unet_path", "plain_cnn"):
        assert abs(r[name]["parameters"] - r["fabric"]["parameters"]) < 0.3 * r["fabric"]["parameters"]


@needs_fashion_mnist
def test_msdnet_fashion_quick(tmp_path):
    r, out = _run(tmp_path, "msdnet-fashion")
    assert (out / "anytime.png").stat().st_size > 5_000 and (out / "budgeted.png").exists()
    msd = r["msdnet"]
    assert len(msd["exit_test_accuracy"]) == 2 and msd["exit_multiply_adds"][0] < msd["exit_multiply_adds"][1]
    for row in msd["budgeted_batch"] + msd["budgeted_batch_shared_threshold"]:
        assert row["val_cost"] <= row["budget"] + 1e-6 and 0 <= row["test_accuracy"] <= 1
    assert {row["rule"] for row in msd["budgeted_batch"]} == {"geometric"}
    saved = np.load(out / "exit_probs.npz")  # the curves can be recomputed from the saved exit outputs
    assert saved["msdnet_val"].shape[:2] == (2, len(saved["y_val"]))
    assert saved["resnet_ee_test"].shape[0] == len(r["resnet_early_exit"]["exits"])
    equal = [n for n in r["resnets"] if n.startswith("resnet8_w")]  # the first exit's equal-cost ResNet-8
    assert set(r["resnets"]) == {"resnet8", "resnet14", *equal} and len(equal) <= 1
    assert r["resnets"]["resnet8"]["multiply_adds"] < r["resnets"]["resnet14"]["multiply_adds"]
    shallow = r["comparison"]["shallowest_resnet"]
    assert shallow["multiply_adds"] == min(x["multiply_adds"] for x in r["resnets"].values())
    if equal:  # the narrowest width costing at least the first exit: one unit narrower costs less
        w = int(equal[0][len("resnet8_w"):])
        assert shallow["name"] == equal[0] and shallow["multiply_adds"] >= msd["exit_multiply_adds"][0]
        assert _resnet8_cost(w - 1) < msd["exit_multiply_adds"][0]


def _resnet8_cost(width: int) -> int:
    from handgrad.architectures import ResNet
    from handgrad.architectures.flops import count_multiply_adds

    if width < 1:
        return 0
    model = ResNet(in_channels=1, num_classes=10, blocks=(1, 1, 1), widths=(width, 2 * width, 4 * width))
    model.eval()
    return count_multiply_adds(model, hg.tensor(np.zeros((1, 1, 28, 28), np.float32)))


@needs_fashion_mnist
def test_msdnet_fashion_jobs_give_the_same_results(tmp_path):
    """--jobs 2 trains the models in two processes; each model is seeded alone, so at one BLAS thread per
    process every number equals the one-process run's, and each worker's log lands in MODEL/train.log."""
    one, _ = _run(tmp_path, "msdnet-fashion", "--threads", "1", "--jobs", "1")
    two, out = _run(tmp_path / "two", "msdnet-fashion", "--threads", "1", "--jobs", "2")
    assert "epoch" in (out / "resnet8" / "train.log").read_text().lower()
    for key in ("msdnet", "resnet_early_exit"):
        assert one[key]["exit_test_accuracy"] == two[key]["exit_test_accuracy"]
        assert one[key]["budgeted_batch"] == two[key]["budgeted_batch"]
    assert {n: r["test_accuracy"] for n, r in one["resnets"].items()} == {
        n: r["test_accuracy"] for n, r in two["resnets"].items()}


def test_segmentation_scores_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    s = segmentation_scores(pred, truth, 4)
    assert s["pixel_accuracy"] == 6 / 8
    # IoU: class 0 = 2/4, class 1 = 2/3, class 2 = 2/3; class 3 absent everywhere: not averaged
    assert np.isclose(s["mean_iou"], (2 / 4 + 2 / 3 + 2 / 3) / 3)


def test_bad_configurations_are_one_line_errors(capsys):
    assert main(["run", "fabric-segment", "--quick", "--scales", "7", "--no-progress", "--out", "/tmp/_hg_x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "7 scales are too deep for a 32x32 input" in err and "\n" not in err
    assert main(["run", "msdnet-fashion", "--quick", "--exits", "2,9", "--out", "/tmp/_hg_y"]) == 2
    err = capsys.readouterr().err.strip()
    assert "layer(s) [9] do not exist" in err and "\n" not in err
    assert main(["run", "msdnet-fashion", "--quick", "--exit-weights", "1,2,3", "--out", "/tmp/_hg_y"]) == 2
    assert "--exit-weights needs 2 non-negative numbers" in capsys.readouterr().err
    assert main(["run", "msdnet-fashion", "--quick", "--jobs", "0", "--out", "/tmp/_hg_y"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err
    assert main(["run", "fabric-segment", "--quick", "--models", "fabric,resnet", "--out", "/tmp/_hg_x"]) == 2
    assert "--models takes fabric, unet_path and/or plain_cnn, got 'fabric,resnet'" in capsys.readouterr().err


def test_median_frequency_class_weights():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])  # shares 6/9, 2/9, 1/9; class 3 absent; median 2/9
    np.testing.assert_allclose(class_weights(labels, 4), [1 / 3, 1, 2, 0], rtol=1e-6)


def test_sqrt_class_weights_and_joint_segment_augmentation():
    import handgrad as hg
    from handgrad import nn
    from handgrad.experiments.fabric_segment import SegmentAugmentingUpdater
    from handgrad.optim import SGD
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])  # f = 6/9, 2/9, 1/9; median 2/9
    np.testing.assert_allclose(class_weights(labels, 4, 0.5), [(1 / 3) ** 0.5, 1, 2 ** 0.5, 0], rtol=1e-6)
    seen = []

    class Probe(nn.Module):  # records what the step trained on
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(hg.zeros(1))

        def forward(self, x):
            seen.append(x.numpy().copy())
            return x[:, :2] * self.w

    def loss(out, y):
        seen.append(y.numpy().copy())
        return out.sum()

    m = Probe()
    up = SegmentAugmentingUpdater(m, SGD(m.parameters(), lr=0.1), loss, "crop-flip", seed=0)
    x = np.zeros((8, 3, 12, 12), np.float32)
    y = np.zeros((8, 12, 12), np.int64)
    x[:, :, 3:6, 2:5] = 1.0
    y[:, 3:6, 2:5] = 7
    up.update((hg.Tensor(x), hg.Tensor(y)))
    xa, ya = seen
    assert not np.array_equal(xa, x)  # moved
    np.testing.assert_array_equal(xa[:, 0] == 1.0, ya == 7)  # image and labels moved together
    assert ya.dtype == np.int64 and set(np.unique(ya)) <= {0, 7}
