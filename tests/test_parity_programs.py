"""Parity harness: small PyTorch example programs, written ONCE in PyTorch style, run unchanged against
``torch`` and ``handgrad`` (the library comes from the ``lib`` fixture: ``lib.torch`` is the top-level
module, ``lib.nn``, ``lib.F``, ``lib.optim``, ``lib.data`` its sub-packages). Their float64 losses over
several optimisation steps must agree to 1e-10.

The programs follow the shape of PyTorch's examples (mnist, word_language_model with LSTM and Transformer,
vae, time_sequence_prediction with LBFGS, siamese_network, and word_language_model's old-style
init_weights through ``.data`` with a hand-written SGD step), shrunk to a few steps on tiny random data so
the whole file runs in seconds. Only what cannot be shared is outside them: both libraries draw
different random numbers, so initial weights come from one NumPy generator through ``load_state_dict``
(the PyTorch API), the VAE's noise is passed in, and dropout is 0.
"""

from __future__ import annotations

import functools
import importlib
import math
from types import SimpleNamespace

import numpy as np
import pytest

LIBS = ["torch", "handgrad"]


def _namespace(name):
    top = importlib.import_module(name)
    return SimpleNamespace(name=name, torch=top, nn=importlib.import_module(f"{name}.nn"),
                           F=importlib.import_module(f"{name}.nn.functional"),
                           optim=importlib.import_module(f"{name}.optim"),
                           data=importlib.import_module(f"{name}.utils.data"))


@pytest.fixture(params=LIBS)
def lib(request):
    return _namespace(request.param)


def init_weights(lib, model, seed):
    """Same starting point in both libraries: every entry of the state dict drawn from one NumPy generator
    (small uniform values; running statistics keep their defaults)."""
    rng = np.random.default_rng(seed)
    state = {}
    for k, v in model.state_dict().items():
        arr = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if "running" in k or "num_batches" in k or arr.dtype.kind != "f":
            state[k] = lib.torch.tensor(arr)
        else:
            state[k] = lib.torch.tensor(rng.uniform(-0.3, 0.3, arr.shape))
    model.load_state_dict(state)
    return model


# -- 1. CNN classifier (examples/mnist: Conv-Conv-MaxPool-FC, Adadelta + StepLR) ----------------------------
def cnn_classifier(lib):
    torch, nn, F, optim = lib.torch, lib.nn, lib.F, lib.optim

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 6, 3, 1)
            self.dropout1 = nn.Dropout(0.0)
            self.fc1 = nn.Linear(6 * 3 * 3, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            return F.log_softmax(self.fc2(x), dim=1)

    rng = np.random.default_rng(0)
    images, labels = torch.tensor(rng.standard_normal((24, 1, 10, 10))), torch.tensor(rng.integers(0, 10, 24))
    loader = lib.data.DataLoader(lib.data.TensorDataset(images, labels), batch_size=8)
    model = init_weights(lib, Net(), 1)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    losses = []
    for _epoch in range(3):
        model.train()
        for data, target in loader:
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(dim=1, keepdim=True)
        correct = pred.eq(labels.view_as(pred)).sum().item()
    return losses + [losses[-1] - 1e-3 * correct]  # accuracy folded in (equal counts or the check fails)


# -- 2. LSTM word language model (examples/word_language_model, RNNModel('LSTM'), clip_grad_norm_) ---------
def lstm_language_model(lib):
    torch, nn, optim = lib.torch, lib.nn, lib.optim

    class RNNModel(nn.Module):
        def __init__(self, ntoken, ninp, nhid, nlayers):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=0.0)
            self.decoder = nn.Linear(nhid, ntoken)
            self.nhid, self.nlayers = nhid, nlayers

        def forward(self, input, hidden):
            emb = self.encoder(input)
            output, hidden = self.rnn(emb, hidden)
            decoded = self.decoder(output).view(-1, self.decoder.out_features)
            return nn.functional.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            return (torch.zeros(self.nlayers, bsz, self.nhid), torch.zeros(self.nlayers, bsz, self.nhid))

    def repackage_hidden(h):
        return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)

    ntokens, bptt, bsz = 11, 5, 3
    stream = torch.tensor(np.random.default_rng(2).integers(0, ntokens, 3 * bptt * bsz + 1))
    nbatch = (stream.size(0) - 1) // bsz
    data = stream[: nbatch * bsz].view(bsz, -1).t().contiguous()
    model = init_weights(lib, RNNModel(ntokens, 6, 8, 2), 3)
    criterion = nn.NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    hidden = model.init_hidden(bsz)
    losses = []
    for _epoch in range(2):
        for i in range(0, data.size(0) - 1, bptt):
            seq_len = min(bptt, data.size(0) - 1 - i)
            inp, target = data[i:i + seq_len], data[i + 1:i + 1 + seq_len].reshape(-1)
            hidden = repackage_hidden(hidden)
            model.zero_grad()
            output, hidden = model(inp, hidden)
            loss = criterion(output, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            losses.append(loss.item())
    return losses


# -- 3. VAE (examples/vae: fc1 -> (mu, logvar) -> reparameterise -> decoder, BCE + KLD, Adam) -------------
def vae(lib):
    torch, nn, F, optim = lib.torch, lib.nn, lib.F, lib.optim

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 12)
            self.fc21 = nn.Linear(12, 3)
            self.fc22 = nn.Linear(12, 3)
            self.fc3 = nn.Linear(3, 12)
            self.fc4 = nn.Linear(12, 16)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar, eps):
            std = torch.exp(0.5 * logvar)
            return mu + eps * std

        def decode(self, z):
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

        def forward(self, x, eps):
            mu, logvar = self.encode(x.view(-1, 16))
            return self.decode(self.reparameterize(mu, logvar, eps)), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        bce = F.binary_cross_entropy(recon_x, x.view(-1, 16), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld

    rng = np.random.default_rng(4)
    x = torch.tensor(rng.random((10, 1, 4, 4)))
    noise = [torch.tensor(rng.standard_normal((10, 3))) for _ in range(6)]  # randn_like(std), drawn once
    model = init_weights(lib, VAE(), 5)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for eps in noise:
        optimizer.zero_grad()
        recon, mu, logvar = model(x, eps)
        loss = loss_function(recon, x, mu, logvar)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# -- 4. LBFGS (examples/time_sequence_prediction: LSTMCell sequence model, LBFGS closure) ----------------
def lbfgs_sequence_regression(lib):
    torch, nn, optim = lib.torch, lib.nn, lib.optim

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, 6)
            self.linear = nn.Linear(6, 1)

        def forward(self, input):
            outputs = []
            h_t = torch.zeros(input.size(0), 6)
            c_t = torch.zeros(input.size(0), 6)
            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                outputs += [self.linear(h_t)]
            return torch.cat(outputs, dim=1)

    t = np.arange(12)[None, :] + np.array([[0.0], [3.0], [7.0]])
    wave = torch.tensor(np.sin(t / 2.0))
    inp, target = wave[:, :-1], wave[:, 1:]
    seq = init_weights(lib, Sequence(), 6)
    criterion = nn.MSELoss()
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8, max_iter=6, line_search_fn="strong_wolfe")
    losses = []
    for _ in range(3):
        def closure():
            optimizer.zero_grad()
            loss = criterion(seq(inp), target)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    with torch.no_grad():
        losses.append(criterion(seq(inp), target).item())
    return losses


# -- 5. Siamese network with BCE (examples/siamese_network: shared tower, |f1 - f2| head, sigmoid + BCE) ----
def siamese_bce(lib):
    torch, nn, F, optim = lib.torch, lib.nn, lib.F, lib.optim

    class SiameseNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.tower = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                       nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten())
            self.fc = nn.Sequential(nn.Linear(16, 8), nn.ReLU(inplace=True), nn.Linear(8, 1))
            self.sigmoid = nn.Sigmoid()

        def forward_once(self, x):
            return F.relu(self.tower(x))  # (already >= 0: the functional path is exercised too)

        def forward(self, input1, input2):
            diff = torch.abs(self.forward_once(input1) - self.forward_once(input2))
            return self.sigmoid(self.fc(diff))

    rng = np.random.default_rng(7)
    a, b = torch.tensor(rng.standard_normal((8, 1, 6, 6))), torch.tensor(rng.standard_normal((8, 1, 6, 6)))
    same = torch.tensor((rng.random((8, 1)) > 0.5).astype(np.float64))
    model = init_weights(lib, SiameseNetwork(), 8)
    criterion = nn.BCELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = criterion(model(a, b).squeeze(), same.squeeze())
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        losses.append(criterion(model(a, b), same).item())
    return losses


# -- 6. Transformer language model (examples/word_language_model, TransformerModel) -----------------------
def transformer_language_model(lib):
    torch, nn, F, optim = lib.torch, lib.nn, lib.F, lib.optim

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, max_len=32):
            super().__init__()
            position = np.arange(max_len)[:, None]
            div_term = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = np.zeros((max_len, 1, d_model))
            pe[:, 0, 0::2], pe[:, 0, 1::2] = np.sin(position * div_term), np.cos(position * div_term)
            self.register_buffer("pe", torch.tensor(pe))

        def forward(self, x):
            return x + self.pe[: x.size(0)]

    class TransformerModel(nn.Module):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers):
            super().__init__()
            self.pos_encoder = PositionalEncoding(ninp)
            layer = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout=0.0)
            self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.decoder = nn.Linear(ninp, ntoken)
            self.ninp = ninp

        def forward(self, src, src_mask):
            src = self.pos_encoder(self.encoder(src) * math.sqrt(self.ninp))
            output = self.transformer_encoder(src, src_mask)
            return F.log_softmax(self.decoder(output), dim=-1)

    ntokens, bptt, bsz = 9, 6, 2
    tokens = torch.tensor(np.random.default_rng(9).integers(0, ntokens, 4 * bptt * bsz + 1))
    data = tokens[: (tokens.size(0) - 1) // bsz * bsz].view(bsz, -1).t().contiguous()
    model = init_weights(lib, TransformerModel(ntokens, 8, 2, 16, 2), 10)
    criterion = nn.NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.3)
    losses = []
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        src, target = data[i:i + seq_len], data[i + 1:i + 1 + seq_len].reshape(-1)
        mask = nn.Transformer.generate_square_subsequent_mask(seq_len)
        optimizer.zero_grad()
        output = model(src, mask)
        loss = criterion(output.view(-1, ntokens), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        losses.append(loss.item())
    return losses


# -- 7. GRU language model trained the old way (word_language_model: init_weights through .data, SGD by hand) --
def gru_language_model_manual_sgd(lib):
    torch, nn = lib.torch, lib.nn

    class RNNModel(nn.Module):
        def __init__(self, ntoken, ninp, nhid):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.GRU(ninp, nhid, 1)
            self.decoder = nn.Linear(nhid, ntoken)
            self.init_weights()

        def init_weights(self):
            initrange = 0.1
            self.encoder.weight.data.uniform_(-initrange, initrange)
            self.decoder.bias.data.fill_(0.0)
            self.decoder.weight.data.normal_(0.0, initrange)

        def forward(self, input, hidden):
            output, hidden = self.rnn(self.encoder(input), hidden)
            return nn.functional.log_softmax(self.decoder(output), dim=-1), hidden

    ntokens, bptt, bsz, lr = 10, 4, 3, 2.0
    stream = np.tile(np.random.default_rng(11).permutation(ntokens)[:5], 10)  # a cycle of 5 tokens: learnable
    data = torch.tensor(stream[: (len(stream) - 1) // bsz * bsz]).view(bsz, -1).t().contiguous()
    model = RNNModel(ntokens, 5, 7)
    enc, dec = model.encoder.weight, model.decoder.weight
    assert float(enc.detach().abs().max()) <= 0.1 and float(model.decoder.bias.detach().abs().max()) == 0.0
    assert enc.is_leaf and dec.is_leaf
    versions = [p._version for p in model.parameters()]  # .data writes below must leave them as they are
    # the libraries draw different numbers: copy one starting point across, through .data as well (the
    # decoder bias keeps the 0 that fill_ wrote)
    rng = np.random.default_rng(12)
    for name, p in model.named_parameters():
        if name != "decoder.bias":
            p.data.copy_(torch.tensor(rng.uniform(-0.3, 0.3, tuple(p.shape))))
    criterion = nn.NLLLoss()
    hidden = torch.zeros(1, bsz, 7)
    losses = []
    for _epoch in range(3):
        for i in range(0, data.size(0) - 1, bptt):
            seq_len = min(bptt, data.size(0) - 1 - i)
            inp, target = data[i:i + seq_len], data[i + 1:i + 1 + seq_len].reshape(-1)
            hidden = hidden.detach()
            model.zero_grad()
            output, hidden = model(inp, hidden)
            loss = criterion(output.view(-1, ntokens), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            for p in model.parameters():
                p.data.add_(p.grad.data, alpha=-lr)
            losses.append(loss.item())
    assert all(p.is_leaf for p in model.parameters()) and [p._version for p in model.parameters()] == versions
    return losses


PROGRAMS = {f.__name__: f for f in (cnn_classifier, lstm_language_model, vae, lbfgs_sequence_regression,
                                      siamese_bce, transformer_language_model, gru_language_model_manual_sgd)}


@functools.cache
def _run(program, libname):
    ns = _namespace(libname)
    if libname == "torch":
        ns.torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    old = ns.torch.get_default_dtype()
    ns.torch.set_default_dtype(ns.torch.float64)
    try:
        if libname == "torch":
            ns.torch.manual_seed(0)
        return tuple(PROGRAMS[program](ns))
    finally:
        ns.torch.set_default_dtype(old)


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_program_losses_agree_with_pytorch(program, lib):
    losses = np.array(_run(program, lib.name))
    reference = np.array(_run(program, "torch"))
    assert losses.shape == reference.shape and np.isfinite(losses).all()
    np.testing.assert_allclose(losses, reference, rtol=1e-10, atol=1e-12)
    # the programs really optimise: the losses of the last third are lower than those of the first third
    k = max(1, len(losses) // 3)
    assert losses[-k:].mean() < losses[:k].mean()
