"""Trainer, callbacks, history, checkpoints and resume on a tiny synthetic problem (float64, a second or so).

The model, loss and loader here are built from engine ops only (Parameter, matmul, relu, exp, log,
indexing), so these tests exercise the training loop itself and do not depend on the layer library.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy
import pytest

import handgrad
from handgrad.engine.random import get_rng, manual_seed
from handgrad.nn import Module, Parameter
from handgrad.optim import SGD
from handgrad.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from handgrad.serialization import load
from handgrad.train import (
    Callback,
    EarlyStopping,
    History,
    LambdaCallback,
    LRSchedulerCallback,
    MeanMetric,
    ModelCheckpoint,
    Trainer,
    accuracy,
)

COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"]


# -- a tiny problem ------------------------------------------------------------------------------------------
class TinyNet(Module):
    """4 -> 16 -> 3 with ReLU and (optionally) inverted dropout drawn from handgrad's generator."""

    def __init__(self, seed: int = 0, p: float = 0.0) -> None:
        super().__init__()
        r = numpy.random.default_rng(seed)
        self.w1 = Parameter(r.normal(0, 0.5, (4, 16)))
        self.b1 = Parameter(numpy.zeros(16))
        self.w2 = Parameter(r.normal(0, 0.5, (16, 3)))
        self.b2 = Parameter(numpy.zeros(3))
        self.p = p

    def forward(self, x):
        h = (x @ self.w1 + self.b1).relu()
        if self.training and self.p > 0:
            keep = get_rng().random(h.shape) >= self.p  # uses the global generator: resume must restore it
            h = h * handgrad.tensor(keep / (1 - self.p))
        return h @ self.w2 + self.b2


def cross_entropy(logits, target):
    """Mean of -log softmax(logits)[target], written with engine ops (no max-shift: logits stay small)."""
    n = logits.shape[0]
    lse = logits.exp().sum(1).log()
    picked = logits[numpy.arange(n), target.numpy()]
    return (lse - picked).mean()


class Loader:
    """Mini-batches of (x, y) Tensors; reshuffled each epoch with handgrad's global generator."""

    def __init__(self, x, y, batch_size, shuffle=False):
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        idx = get_rng().permutation(len(self.x)) if self.shuffle else numpy.arange(len(self.x))
        for i in range(0, len(idx), self.batch_size):
            j = idx[i : i + self.batch_size]
            yield handgrad.tensor(self.x[j]), handgrad.tensor(self.y[j])


def blobs(n, seed):
    r = numpy.random.default_rng(seed)
    centers = numpy.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    y = r.integers(0, 3, n)
    x = centers[y] + r.normal(0, 0.7, (n, 4))
    return x, y.astype(numpy.int64)


@pytest.fixture()
def data():
    xt, yt = blobs(120, 1)
    xv, yv = blobs(61, 2)  # 61: the last validation batch is smaller
    return Loader(xt, yt, 16, shuffle=True), Loader(xv, yv, 8), (xv, yv)


def make(seed=0, p=0.0, lr=0.1, **kw):
    model = TinyNet(seed, p)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9)
    kw.setdefault("progress", False)
    kw.setdefault("verbose", False)
    return model, opt, Trainer(model, opt, cross_entropy, **kw)


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        numpy.testing.assert_array_equal(a[k], b[k], err_msg=k)


class Script(Callback):
    """Overwrites the monitored column with scripted values (runs before the others) and records weights."""

    order = -20

    def __init__(self, values, key="val_loss"):
        self.values, self.key, self.weights = values, key, {}

    def on_epoch_end(self, epoch, logs):
        logs[self.key] = self.values[epoch - 1]
        self.weights[epoch] = weights(self.trainer.model)


# -- the loop ---------------------------------------------------------------------------------------------------
def test_fit_lowers_loss_and_writes_history(tmp_path, data):
    train, val, (xv, yv) = data
    manual_seed(0)
    model, _, trainer = make(out_dir=tmp_path)
    history = trainer.fit(train, val, epochs=6)
    assert len(history) == 6 and history.epochs == [1, 2, 3, 4, 5, 6]
    assert history.columns == COLUMNS
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert history["lr"] == [0.1] * 6
    # the epoch's val numbers are the exact full-set values (sample-weighted over uneven batches)
    model.eval()
    with handgrad.no_grad():
        out = model(handgrad.tensor(xv))
        full_loss = cross_entropy(out, handgrad.tensor(yv)).item()
    assert history["val_loss"][-1] == pytest.approx(full_loss, rel=1e-12)
    assert history["val_accuracy"][-1] == pytest.approx(accuracy(out, yv), rel=1e-12)
    assert trainer.evaluate(val) == pytest.approx({"loss": full_loss, "accuracy": accuracy(out, yv)}, rel=1e-12)
    # CSV and JSON mirror the in-memory history
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS and len(rows) == 7
    assert float(rows[-1][1]) == history["loss"][-1]
    assert float(rows[-1][3]) == history["val_loss"][-1]
    js = json.loads((tmp_path / "history.json").read_text())
    assert js["columns"] == COLUMNS and js["rows"] == history.rows
    assert History.from_csv(str(tmp_path / "history.csv")).rows == history.rows


def test_train_metrics_are_sample_weighted_running_means(data):
    train, _, _ = data
    seen = []
    manual_seed(0)
    _, _, trainer = make(callbacks=[LambdaCallback(on_batch_end=lambda i, logs: seen.append(logs))])
    h = trainer.fit(train, epochs=1)
    assert [s["size"] for s in seen] == [16] * 7 + [8]
    expected = sum(s["loss"] * s["size"] for s in seen) / 120
    assert h["loss"][0] == pytest.approx(expected, rel=1e-12)
    assert "val_loss" not in h


def test_evaluate_restores_train_mode_and_records_no_graph(data):
    _, val, _ = data
    model, _, trainer = make()
    model.train()
    trainer.evaluate(val)
    assert model.training is True
    model.eval()
    trainer.evaluate(val)
    assert model.training is False
    assert all(p.grad is None for p in model.parameters())


def test_custom_metric_and_callback_columns(data):
    train, val, _ = data

    def error_rate(out, y):
        return 1.0 - accuracy(out, y)

    class AddColumn(Callback):
        def on_epoch_end(self, epoch, logs):
            logs["double_loss"] = 2 * logs["loss"]

    manual_seed(0)
    _, _, trainer = make(metrics=["accuracy", error_rate], callbacks=[AddColumn()])
    h = trainer.fit(train, val, epochs=2)
    assert h["error_rate"][1] == pytest.approx(1 - h["accuracy"][1], abs=1e-12)
    assert h["val_error_rate"][1] == pytest.approx(1 - h["val_accuracy"][1], abs=1e-12)
    assert h["double_loss"] == [2 * v for v in h["loss"]]


def test_grad_clip_bounds_the_global_norm(data):
    train, _, _ = data
    norms = []

    def record(i, logs):
        g = [p.grad.array for p in trainer.model.parameters()]
        norms.append(math.sqrt(sum(float((a * a).sum()) for a in g)))

    manual_seed(0)
    _, _, trainer = make(lr=0.5, grad_clip=0.05, callbacks=[LambdaCallback(on_batch_end=record)])
    trainer.fit(train, epochs=1)
    assert max(norms) == pytest.approx(0.05, rel=1e-5)  # the first gradients are far larger than 0.05


def test_progress_bar_goes_to_stderr_when_asked(data, capsys):
    train, _, _ = data
    manual_seed(0)
    _, _, trainer = make(progress=True, verbose=True)
    trainer.fit(train, epochs=1)
    cap = capsys.readouterr()
    assert "epoch 1/1" in cap.err and "/8 [" in cap.err  # a tqdm bar over the 8 batches
    assert cap.out.startswith("epoch 1/1  loss ")  # the summary line


# -- early stopping -------------------------------------------------------------------------------------------
def test_early_stopping_stops_at_the_right_epoch_and_restores_best_weights(data):
    train, val, _ = data
    script = Script([1.0, 0.8, 0.85, 0.7, 0.72, 0.71, 0.9, 0.6, 0.5])
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    manual_seed(0)
    model, _, trainer = make(callbacks=[es, script])
    h = trainer.fit(train, val, epochs=9)
    # best 0.7 at epoch 4; epochs 5 and 6 do not improve -> stop after epoch 6
    assert len(h) == 6 and trainer.epoch == 6
    assert (es.best_epoch, es.best, es.stopped_epoch) == (4, 0.7, 6)
    assert h.meta["early_stopping"] == {
        "monitor": "val_loss", "mode": "min", "best_epoch": 4, "best": 0.7, "stopped_epoch": 6, "restored": True,
    }
    assert_same_weights(weights(model), script.weights[4])
    assert not numpy.array_equal(weights(model)["w1"], script.weights[6]["w1"])


@pytest.mark.parametrize(
    ("values", "kwargs", "stopped", "best_epoch"),
    [
        ([1.0, 0.8, 0.85, 0.7, 0.9], {"patience": 2, "min_delta": 0.15}, 4, 2),  # 0.7 is not 0.15 below 0.8
        ([1.0, 0.9, 0.95], {"patience": 0}, 3, 2),  # patience 0: the first bad epoch stops
        ([0.5, 0.6, 0.55, 0.7, 0.7, 0.65], {"monitor": "val_accuracy", "patience": 2}, 6, 4),  # auto -> max
        ([0.5, float("nan"), 0.4], {"patience": 1}, 2, 1),  # NaN never improves
        ([1.0, 2.0, 3.0, 4.0, 5.0], {"patience": 0, "min_epochs": 4}, 4, 1),  # cannot stop before epoch 4
        ([1.0, 2.0, 0.5, 3.0, 4.0, 5.0], {"patience": 1, "min_epochs": 3}, 4, 3),  # best tracked from the start
    ],
)
def test_early_stopping_rules(data, values, kwargs, stopped, best_epoch):
    train, val, _ = data
    es = EarlyStopping(**kwargs)
    manual_seed(0)
    _, _, trainer = make(callbacks=[es, Script(values, es.monitor)])
    h = trainer.fit(train, val, epochs=len(values) + 3)
    assert (len(h), es.stopped_epoch, es.best_epoch) == (stopped, stopped, best_epoch)


def test_early_stopping_without_stop_keeps_last_if_it_is_best(data):
    train, val, _ = data
    es = EarlyStopping(patience=5, restore_best_weights=True)
    script = Script([3.0, 2.0, 1.0])
    manual_seed(0)
    model, _, trainer = make(callbacks=[es, script])
    h = trainer.fit(train, val, epochs=3)
    assert len(h) == 3 and es.stopped_epoch == 0 and h.meta["early_stopping"]["restored"] is False
    assert_same_weights(weights(model), script.weights[3])


def test_early_stopping_errors(data):
    train, _, _ = data
    with pytest.raises(ValueError, match="EarlyStopping: patience must be a non-negative integer"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="EarlyStopping: min_epochs must be a non-negative integer, got 1.5"):
        EarlyStopping(min_epochs=1.5)
    with pytest.raises(ValueError, match="EarlyStopping: mode must be 'min', 'max' or 'auto', got 'up'"):
        EarlyStopping(mode="up")
    _, _, trainer = make(callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match="EarlyStopping: monitor 'val_loss' needs a val_loader"):
        trainer.fit(train, epochs=2)
    _, _, trainer = make(callbacks=[EarlyStopping(monitor="f1")])
    with pytest.raises(KeyError, match="EarlyStopping: monitor 'f1' is not in the epoch logs"):
        trainer.fit(train, epochs=2)


# -- checkpoints and resume -----------------------------------------------------------------------------------
def test_model_checkpoint_writes_best_and_last(tmp_path, data):
    train, val, _ = data
    script = Script([0.5, 0.4, 0.6])
    ckpt = ModelCheckpoint(tmp_path / "ck", monitor="val_loss")
    manual_seed(0)
    _, _, trainer = make(callbacks=[ckpt, script])
    trainer.fit(train, val, epochs=3)
    best, last = load(ckpt.best_path), load(ckpt.last_path)
    assert (best["epoch"], last["epoch"], ckpt.best_epoch) == (2, 3, 2)
    assert_same_weights(best["model"], script.weights[2])
    assert_same_weights(last["model"], script.weights[3])
    assert len(best["history"]["rows"]) == 2 and len(last["history"]["rows"]) == 3
    assert set(last["optimizer"]) == {"state", "param_groups"}
    assert ckpt.best_path == os.path.join(str(tmp_path / "ck"), "best.safetensors")


def test_model_checkpoint_errors(data, tmp_path):
    train, _, _ = data
    with pytest.raises(ValueError, match="ModelCheckpoint: save_best and save_last are both False"):
        ModelCheckpoint(tmp_path, save_best=False, save_last=False)
    _, _, trainer = make(callbacks=[ModelCheckpoint(tmp_path / "never-written")])
    with pytest.raises(ValueError, match="ModelCheckpoint: monitor 'val_loss' needs a val_loader"):
        trainer.fit(train, epochs=1)
    assert not (tmp_path / "never-written").exists()


def _full_setup(tmp, seed, ckdir):
    """Dropout + shuffling + momentum + StepLR + early stopping + checkpoints: all the state resume needs."""
    model = TinyNet(seed, p=0.3)
    opt = SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    cbs = [EarlyStopping(patience=50, restore_best_weights=True), ModelCheckpoint(ckdir)]
    trainer = Trainer(model, opt, cross_entropy, callbacks=cbs, scheduler=sched, progress=False, verbose=False,
                      out_dir=tmp)
    return model, trainer


def _without_time(h):
    return [{k: v for k, v in r.items() if k != "time"} for r in h.rows]


def test_resume_equals_an_uninterrupted_run(tmp_path, data):
    train, val, _ = data
    manual_seed(3)
    model_a, trainer_a = _full_setup(tmp_path / "a", 0, tmp_path / "a")
    ha = trainer_a.fit(train, val, epochs=6)

    manual_seed(3)
    _, trainer_b = _full_setup(tmp_path / "b", 0, tmp_path / "b")
    trainer_b.fit(train, val, epochs=3)
    manual_seed(12345)  # the checkpoint must bring back the generator, whatever it is now
    model_c, trainer_c = _full_setup(tmp_path / "c", 99, tmp_path / "c")  # other initial weights too
    hc = trainer_c.fit(train, val, epochs=6, resume=tmp_path / "b" / "last.safetensors")

    assert _without_time(hc) == _without_time(ha)
    assert hc["lr"] == [0.2, 0.2, 0.1, 0.1, 0.05, 0.05]
    assert_same_weights(weights(model_c), weights(model_a))  # after restore_best_weights on both sides
    assert hc.meta["early_stopping"] == ha.meta["early_stopping"]
    assert_same_weights(load(tmp_path / "c" / "last.safetensors")["model"],
                        load(tmp_path / "a" / "last.safetensors")["model"])


def test_resume_with_a_seeded_dataloader(tmp_path):
    """DataLoader(seed=...) shuffles with its own generator: the checkpoint carries that generator too."""
    from handgrad.data import DataLoader, TensorDataset

    xt, yt = blobs(100, 1)
    xv, yv = blobs(30, 2)

    def loaders():
        return (DataLoader(TensorDataset(xt, yt), batch_size=16, shuffle=True, seed=7),
                DataLoader(TensorDataset(xv, yv), batch_size=16))

    manual_seed(0)
    model_a, trainer_a = _full_setup(None, 0, tmp_path / "a")
    ha = trainer_a.fit(*loaders(), epochs=4)
    manual_seed(0)
    _, trainer_b = _full_setup(None, 0, tmp_path / "b")
    trainer_b.fit(*loaders(), epochs=2)
    model_c, trainer_c = _full_setup(None, 1, tmp_path / "c")
    hc = trainer_c.fit(*loaders(), epochs=4, resume=tmp_path / "b" / "last.safetensors")  # fresh loaders
    assert _without_time(hc) == _without_time(ha)
    assert_same_weights(weights(model_c), weights(model_a))


def test_resume_errors(tmp_path, data):
    train, _, _ = data
    _, _, trainer = make()
    with pytest.raises(FileNotFoundError, match="Trainer: no checkpoint at"):
        trainer.fit(train, epochs=2, resume=tmp_path / "missing.safetensors")
    handgrad.save({"model": {}}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="is not a Trainer checkpoint"):
        trainer.fit(train, epochs=2, resume=tmp_path / "other.safetensors")


# -- Ctrl-C -----------------------------------------------------------------------------------------------------
class InterruptAt(Callback):
    def __init__(self, epoch, batch):
        self.at, self.epoch, self.weights = (epoch, batch), 0, {}

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, batch, logs):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs):
        self.weights[epoch] = weights(self.trainer.model)


def test_keyboard_interrupt_saves_a_clean_checkpoint_and_returns(tmp_path, data, capsys):
    train, val, _ = data
    manual_seed(5)
    stopper = InterruptAt(3, 2)
    model, opt, trainer = make(p=0.2, out_dir=tmp_path, callbacks=[stopper])
    h = trainer.fit(train, val, epochs=5)
    assert "interrupted during epoch 3; rolled back to the end of epoch 2" in capsys.readouterr().err
    assert len(h) == 2 and h.meta["interrupted"] is True and trainer.epoch == 2
    assert_same_weights(weights(model), stopper.weights[2])  # the partial epoch 3 is undone in memory
    saved = load(tmp_path / "interrupted.safetensors")
    assert saved["epoch"] == 2 and len(saved["history"]["rows"]) == 2
    assert_same_weights(saved["model"], stopper.weights[2])
    assert json.loads((tmp_path / "history.json").read_text())["meta"]["interrupted"] is True

    # resuming from it gives exactly the run that was never interrupted
    manual_seed(5)
    model_a, _, trainer_a = make(p=0.2)
    ha = trainer_a.fit(train, val, epochs=4)
    model_r, _, trainer_r = make(seed=7, p=0.2)
    hr = trainer_r.fit(train, val, epochs=4, resume=tmp_path / "interrupted.safetensors")
    assert _without_time(hr) == _without_time(ha)
    assert_same_weights(weights(model_r), weights(model_a))


def test_keyboard_interrupt_can_reraise(tmp_path, data):
    train, _, _ = data
    manual_seed(0)
    _, _, trainer = make(out_dir=tmp_path, on_interrupt="raise", callbacks=[InterruptAt(1, 3)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train, epochs=3)
    assert load(tmp_path / "interrupted.safetensors")["epoch"] == 0  # nothing completed: the initial state


# -- schedulers -------------------------------------------------------------------------------------------------
def test_reduce_lr_on_plateau_gets_the_monitored_value(data):
    train, val, _ = data
    manual_seed(0)
    model = TinyNet(0)
    opt = SGD(model.parameters(), lr=0.1)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1)
    trainer = Trainer(model, opt, cross_entropy, scheduler=sched, callbacks=[Script([1.0, 1.0, 1.0, 1.0, 0.5])],
                      progress=False, verbose=False)
    h = trainer.fit(train, val, epochs=5)
    # epochs 2 and 3 are bad; after the 2nd bad one (epoch 3) the lr halves, from epoch 4 on
    assert h["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05]


def test_scheduler_per_batch(data):
    train, _, _ = data
    model = TinyNet(0)
    opt = SGD(model.parameters(), lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    trainer = Trainer(model, opt, cross_entropy, callbacks=[LRSchedulerCallback(sched, interval="batch")],
                      progress=False, verbose=False)
    trainer.fit(train, epochs=1)
    assert opt.param_groups[0]["lr"] == 0.5 ** len(train)


def test_scheduler_errors():
    model = TinyNet(0)
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="ReduceLROnPlateau steps on an epoch metric"):
        LRSchedulerCallback(ReduceLROnPlateau(opt), interval="batch")
    with pytest.raises(ValueError, match="interval must be 'epoch' or 'batch', got 'step'"):
        LRSchedulerCallback(StepLR(opt, 1), interval="step")
    with pytest.raises(ValueError, match="Trainer: more than one LR scheduler"):
        Trainer(model, opt, cross_entropy, scheduler=StepLR(opt, 1), callbacks=[LRSchedulerCallback(StepLR(opt, 2))])


# -- bad input ----------------------------------------------------------------------------------------------------
def test_trainer_errors(data):
    train, _, _ = data
    model, opt, trainer = make()
    with pytest.raises(ValueError, match="Trainer.fit: epochs must be a positive integer, got 0"):
        trainer.fit(train, epochs=0)
    with pytest.raises(TypeError, match=r"expected each batch to be \(inputs, targets\), got a tuple of length 3"):
        trainer.fit([(1, 2, 3)], epochs=1)
    with pytest.raises(ValueError, match="Trainer.fit: the training loader yielded no batches"):
        trainer.fit([], epochs=1)
    with pytest.raises(ValueError, match="Trainer.evaluate: the loader yielded no batches"):
        trainer.evaluate([])
    bad = Trainer(model, opt, lambda out, y: out, progress=False, verbose=False)
    with pytest.raises(ValueError, match=r"loss_fn must return a one-element Tensor, got \(16, 3\)"):
        bad.fit(train, epochs=1)
    with pytest.raises(ValueError, match="Trainer: grad_clip must be a positive number"):
        Trainer(model, opt, cross_entropy, grad_clip=0)
    with pytest.raises(TypeError, match="Trainer: optimizer must have step"):
        Trainer(model, object(), cross_entropy)
    with pytest.raises(TypeError, match="Trainer: callbacks must be Callback objects, got builtin_function"):
        Trainer(model, opt, cross_entropy, callbacks=[print])
    with pytest.raises(ValueError, match="on_interrupt must be 'return' or 'raise'"):
        Trainer(model, opt, cross_entropy, on_interrupt="ignore")
    with pytest.raises(ValueError, match="metrics: unknown metric 'precision'"):
        Trainer(model, opt, cross_entropy, metrics=["precision"])
    with pytest.raises(ValueError, match="metrics: the name 'loss' is reserved"):
        Trainer(model, opt, cross_entropy, metrics=[("loss", accuracy)])
    with pytest.raises(TypeError, match="LambdaCallback: unknown hooks"):
        LambdaCallback(on_train_end=print)


# -- metrics ----------------------------------------------------------------------------------------------------
def test_accuracy_layouts():
    scores = numpy.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(scores, numpy.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(scores, numpy.array([[0, 1], [1, 0], [1, 0]])) == pytest.approx(2 / 3)  # one-hot
    assert accuracy(numpy.array([2.0, -1.0, 0.5, -3.0]), numpy.array([1, 0, 0, 0])) == 0.75  # logits
    seq = numpy.zeros((2, 3, 4))
    seq[:, 2, :] = 1  # predicts class 2 everywhere
    assert accuracy(seq, numpy.array([[2, 2, 0, 2], [2, 1, 2, 2]])) == 0.75  # (N, C, T) with (N, T)
    with pytest.raises(ValueError, match=r"accuracy: cannot compare output of shape \(3, 2\) with target of shape"):
        accuracy(scores, numpy.zeros((3, 5)))


def test_mean_metric_weights_by_batch_size():
    m = MeanMetric(lambda out, y: float(numpy.mean(out)), name="mean_out")
    m.update(numpy.ones(3), numpy.zeros(3))
    m.update(numpy.zeros(1), numpy.zeros(1))
    assert m.compute() == 0.75 and m.name == "mean_out"


def test_history_best_and_missing_column():
    h = History([{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.3}, {"epoch": 3, "val_loss": 0.3}])
    assert h.best("val_loss") == (2, 0.3)
    assert h.best("val_loss", "max") == (1, 0.5)
    with pytest.raises(KeyError, match="History has no column 'acc'"):
        h["acc"]
    with pytest.raises(ValueError, match="History.best: mode must be 'min' or 'max'"):
        h.best("val_loss", "low")


def test_plot_history_draws_the_curves_and_the_stop(tmp_path):
    from handgrad.train.plots import plot_history

    h = History([{"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 20, "val_loss": abs(e - 3) + 0.5,
                  "val_accuracy": 0.6, "lr": 0.1} for e in range(1, 6)],
                meta={"early_stopping": {"best_epoch": 3, "stopped_epoch": 5}})
    fig = plot_history(h, tmp_path / "lc.png")
    assert (tmp_path / "lc.png").stat().st_size > 5000
    axes = fig.axes
    assert [a.get_ylabel() for a in axes] == ["loss", "accuracy"]
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["train", "validation", "best (epoch 3)", "stopped (epoch 5)"]
    with pytest.raises(ValueError, match="plot_history: the history is empty"):
        plot_history(History())


def test_auto_mode_grows_for_scores_and_shrinks_for_losses():
    from handgrad.train.callbacks import _resolve_mode

    for name in ("val_accuracy", "val_exact_match", "val_bleu", "val_recall_at_1", "val_f1"):
        assert _resolve_mode("auto", name, "EarlyStopping") == "max", name
    for name in ("val_loss", "val_bpc", "val_error"):
        assert _resolve_mode("auto", name, "EarlyStopping") == "min", name
