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

from torch_charlm_common import B, T, CharLM, load, streams, val_loss

path = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
V, train, val = load(path)
model = CharLM(V)
if len(sys.argv) > 4:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[4])
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
X, Y = streams(train, B, T)


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
    print(f"epoch {epoch + 1}: {seconds:.1f} s, train loss {loss.item():.4f}, validation loss {val_loss(model, val):.4f}", flush=True)
