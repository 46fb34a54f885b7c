"""The program ``tests/test_distributed.py`` starts on real ranks (``mpiexec -n 2 python this.py SCENARIO OUT``)
and once in a plain process (a world of one). Scenarios:

* ``bptt``: 20 truncated-BPTT windows of an LSTM LM over 8 streams (4 per rank on 2 ranks), Adam, clipping.
* ``syncbn`` / ``bn``: ``sgd`` with a SyncBatchNorm / a plain BatchNorm1d after the first layer.
* ``sgd`` / ``adam``: 20 steps (2 epochs of 10) of a float64 MLP through ``Trainer(distributed=True)`` with a
  global batch of 16 (8 per rank on 2 ranks); rank 0 saves the weights and history to ``OUT/weights.npz``.
* ``raise``: like ``sgd`` with checkpoints in OUT, but rank 1 raises during epoch 2 (after the epoch-1 checkpoint).
* ``die``: rank 1 exits (``os._exit(3)``) during epoch 2, as a killed process would.
* ``mismatch``: rank 1 builds a wider hidden layer.

SCENARIO may be a comma-separated list (run one after the other, each into ``OUT/SCENARIO``). Optional
arguments: ``EPOCHS`` (default 2) and ``RESUME`` (a checkpoint to continue from). Every scenario writes
``OUT/last.safetensors`` after each epoch.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import handgrad as hg
import handgrad.distributed as dist
import handgrad.functional as F
import handgrad.nn as nn
from handgrad import optim
from handgrad.data.dataloader import DataLoader
from handgrad.data.dataset import TensorDataset
from handgrad.train import BPTTUpdater, LambdaCallback, ModelCheckpoint, StreamLoader, Trainer


class _LM(nn.Module):
    """ids (B, T) -> (logits (B, T, 7), state): what a BPTTUpdater drives."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.rnn = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 7)

    def forward(self, x, state=None):
        out, state = self.rnn(self.emb(x), state)
        return self.head(out), state


def main(scenario: str, out: str, epochs: int = 2, resume: str | None = None) -> None:
    dist.init()
    rank = dist.get_rank()
    hg.manual_seed(0)
    hidden = 13 if scenario == "mismatch" and rank == 1 else 12
    # different initial weights per rank on purpose: broadcast_parameters must make them rank 0's
    hg.manual_seed(rank)
    rng = np.random.default_rng(7)
    updater = None
    if scenario == "bptt":  # an LSTM LM on 8 streams (4 per rank) with a carried state, clipped, Adam
        model = _LM().to(dtype=hg.float64)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        loader = StreamLoader(rng.integers(0, 7, 800), 8, 5, steps_per_epoch=10, seed=3)
        updater = BPTTUpdater(model, opt, grad_clip=0.5)
    else:
        layers = [nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 3)]
        if scenario in ("syncbn", "bn"):
            layers.insert(1, nn.BatchNorm1d(hidden))
        model = nn.Sequential(*layers).to(dtype=hg.float64)
        if scenario == "syncbn":
            model = dist.SyncBatchNorm.convert_sync_batchnorm(model)
        x = rng.standard_normal((160, 5))
        y = rng.integers(0, 3, 160)
        loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, seed=3)
        opt = optim.Adam(model.parameters(), lr=1e-2) if scenario == "adam" else \
            optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    callbacks = [ModelCheckpoint(out, monitor="loss", save_best=False)]
    if scenario in ("raise", "die"):

        def fail(batch: int, logs: dict) -> None:
            if rank == 1 and trainer.epoch == 1 and batch == 3:
                if scenario == "die":
                    os._exit(3)
                raise RuntimeError("boom in a test rank")

        callbacks.append(LambdaCallback(on_batch_end=fail))
    if updater is None:
        trainer = Trainer(model, opt, F.cross_entropy, callbacks=callbacks, distributed=True, verbose=False,
                          progress=False)
    else:
        trainer = Trainer(updater=updater, metrics=(), callbacks=callbacks, distributed=True, verbose=False,
                          progress=False)
    trainer.fit(loader, epochs=epochs, resume=resume)
    if dist.is_main_process():
        weights = {k: np.asarray(v) for k, v in model.state_dict().items()}
        np.savez(os.path.join(out, "weights.npz"), loss=np.array(trainer.history["loss"]),
                 steps=trainer.updater.iteration, **weights)


if __name__ == "__main__":
    scenarios = sys.argv[1].split(",")
    for name in scenarios:  # several: one after the other in one launch, each in OUT/NAME
        where = os.path.join(sys.argv[2], name) if len(scenarios) > 1 else sys.argv[2]
        os.makedirs(where, exist_ok=True)
        main(name, where, *([int(sys.argv[3])] if len(sys.argv) > 3 else []), *sys.argv[4:5])
