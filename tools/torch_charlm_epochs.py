#!/usr/bin/env python3
"""PyTorch's side of the tinyshakespeare comparison in docs/04-char-lm.md.

    python3 tools/torch_charlm_epochs.py CORPUS [EPOCHS] [THREADS] [INIT_OUT]

The same setup as `charlm train --corpus CORPUS` with its defaults: a 2x256 LSTM over one-hot
characters and a linear head, mean cross-entropy, Adam(lr=2e-3), clip_grad_norm_(5), char-rnn's
streams of B = T = 50 with the state carried (detached) between batches and reset each epoch, the
last 10% held out. Prints per epoch: the wall time of the training steps and the validation loss
(the held-out text as B streams of T-step chunks from a zero state, nats per character).
With INIT_OUT it first saves the initial weights there (safetensors, for `charlm train --init`),
so both sides can start from the same point.
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

path = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
text = open(path, encoding="utf-8").read()
chars = sorted(set(text))
V = len(chars)
index = {c: i for i, c in enumerate(chars)}
data = torch.tensor([index[c] for c in text])
split = len(data) - int(len(data) * 0.1)
train, val = data[:split], data[split:]
B, T, H, L = 50, 50, 256, 2


class CharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(V, H, L, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, x, state=None):
        out, state = self.rnn(F.one_hot(x, V).float(), state)
        return self.head(out), state


def streams(d, b, t):
    n = (len(d) - 1) // (b * t) * t
    return d[: b * n].view(b, n), d[1 : b * n + 1].view(b, n)


model = CharLM()
if len(sys.argv) > 4:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[4])
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
X, Y = streams(train, B, T)


def val_loss():
    vb = min(B, len(val) - 1)
    n = (len(val) - 1) // vb
    vx, vy = val[: vb * n].view(vb, n), val[1 : vb * n + 1].view(vb, n)
    total, state = 0.0, None
    with torch.no_grad():
        for j in range(0, n, T):
            out, state = model(vx[:, j : j + T], state)
            total += F.cross_entropy(out.reshape(-1, V), vy[:, j : j + T].reshape(-1), reduction="sum").item()
    return total / (vb * n)


print(f"torch {torch.__version__}, {threads} threads, {X.shape[1] // T} batches per epoch")
for epoch in range(epochs):
    state, t0 = None, time.time()
    for j in range(0, X.shape[1], T):
        if state is not None:
            state = tuple(s.detach() for s in state)
        out, state = model(X[:, j : j + T], state)
        loss = F.cross_entropy(out.reshape(-1, V), Y[:, j : j + T].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    seconds = time.time() - t0
    print(f"epoch {epoch + 1}: {seconds:.1f} s, train loss {loss.item():.4f}, validation loss {val_loss():.4f}", flush=True)
