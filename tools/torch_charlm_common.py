"""What tools/torch_charlm_epochs.py and tools/torch_charlm_timed.py share: `charlm train`'s
default setup in PyTorch (a 2x256 LSTM over one-hot characters and a linear head; char-rnn's
streams of B = T = 50; the last 10 % of the text held out) and its validation loss.
"""
import torch
import torch.nn.functional as F
from torch import nn

B, T, H, L = 50, 50, 256, 2


def load(path):
    """The vocabulary size and the training and held-out characters of the text at `path`
    (the vocabulary sorted by code point, as charlm's)."""
    text = open(path, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text])
    split = len(data) - int(len(data) * 0.1)
    return len(chars), data[:split], data[split:]


class CharLM(nn.Module):
    def __init__(self, V):
        super().__init__()
        self.V = V
        self.rnn = nn.LSTM(V, H, L, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, x, state=None):
        out, state = self.rnn(F.one_hot(x, self.V).float(), state)
        return self.head(out), state


def streams(d, b, t):
    """Inputs and targets as `b` streams of whole `t`-step batches (char-rnn's)."""
    n = (len(d) - 1) // (b * t) * t
    return d[: b * n].view(b, n), d[1 : b * n + 1].view(b, n)


def val_loss(model, val):
    """The held-out text as B streams of T-step chunks from a zero state, nats per character."""
    vb = min(B, len(val) - 1)
    n = (len(val) - 1) // vb
    vx, vy = val[: vb * n].view(vb, n), val[1 : vb * n + 1].view(vb, n)
    total, state = 0.0, None
    with torch.no_grad():
        for j in range(0, n, T):
            out, state = model(vx[:, j : j + T], state)
            total += F.cross_entropy(out.reshape(-1, model.V), vy[:, j : j + T].reshape(-1), reduction="sum").item()
    return total / (vb * n)
