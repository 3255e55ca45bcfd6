#!/usr/bin/env python3
"""PyTorch's default setup trained for a fixed wall time: the baseline of docs/04's 30-minute recipe.

    python3 tools/torch_charlm_timed.py CORPUS MINUTES [THREADS] [VAL_EVERY]

The setup of `tools/torch_charlm_epochs.py` (the same as `charlm train --corpus CORPUS` with its
defaults: a 2x256 LSTM over one-hot characters and a linear head, mean cross-entropy,
Adam(lr=2e-3), clip_grad_norm_(5), char-rnn's streams of B = T = 50 with the state carried
(detached) between batches and reset each epoch, the last 10 % held out), trained until MINUTES of
wall time have passed, validations included (as `charlm train --time-limit` counts). Every
VAL_EVERY steps (default 250) and at the end it prints one line

    step S minutes M train T validation V best B

(the validation loss: the held-out text as B streams of T-step chunks from a zero state, nats per
character; `best`: the lowest so far), so that the curve can be set beside charlm's.
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from torch_charlm_common import B, T, CharLM, load, streams, val_loss

if len(sys.argv) < 3:
    sys.exit("usage: torch_charlm_timed.py CORPUS MINUTES [THREADS] [VAL_EVERY]")
path = sys.argv[1]
minutes = float(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
val_every = int(sys.argv[4]) if len(sys.argv) > 4 else 250
torch.set_num_threads(threads)
torch.manual_seed(0)
V, train, val = load(path)
model = CharLM(V)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
X, Y = streams(train, B, T)
print(f"torch {torch.__version__}, {threads} threads, {minutes} minutes, {X.shape[1] // T} batches per epoch")
start, step, best, state, losses = time.time(), 0, float("inf"), None, []
done = False
while not done:
    state = None
    for j in range(0, X.shape[1], T):
        if state is not None:
            state = tuple(s.detach() for s in state)
        out, state = model(X[:, j : j + T], state)
        loss = F.cross_entropy(out.reshape(-1, V), Y[:, j : j + T].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        done = time.time() - start >= minutes * 60
        if step % val_every == 0 or done:
            v = val_loss(model, val)
            best = min(best, v)
            train_mean = sum(losses) / len(losses)
            losses = []
            elapsed = (time.time() - start) / 60
            print(f"step {step} minutes {elapsed:.2f} train {train_mean:.4f} validation {v:.4f} best {best:.4f}", flush=True)
        if done:
            break
