#!/usr/bin/env python3
"""PyTorch reference values for the charlm tests (crates/charlm/tests/fixtures/).

    python3 tools/gen_charlm_fixtures.py

From crates/charlm/tests/fixtures/corpus.txt (a paragraph the project wrote) it makes, for
an LSTM, a GRU and a tanh RNN of 2 layers x 16 units:

- init_{cell}.safetensors: float64 weights drawn by torch (manual_seed 7), PyTorch state_dict
  names, no metadata (what `charlm train --init` reads);
- eval_{cell}.json: the eval loss of those weights on the corpus, one stream from a zero state,
  in float64 and float32 (the f32 model is the f64 one rounded);
- after_{cell}_{opt}.safetensors for opt in sgd, adam: the weights after 10 training steps in
  float64 from the init: streams batching (B = 4, T = 12, char-rnn's n = ((len-1)//(B*T))*T),
  state carried between batches and detached, reset at each epoch, mean cross-entropy,
  clip_grad_norm_(5.0), then SGD(lr=0.5) or Adam(lr=0.01); no validation split.
"""
import json
import pathlib

import torch
from torch import nn
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/charlm/tests/fixtures"
H, L, B, T, STEPS = 16, 2, 4, 12, 10
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class CharLM(nn.Module):
    def __init__(self, cell, v):
        super().__init__()
        self.rnn = CELLS[cell](v, H, L, batch_first=True)
        self.head = nn.Linear(H, v)

    def forward(self, x, state=None):
        out, state = self.rnn(x, state)
        return self.head(out), state


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def eval_loss(model, ids, v):
    x = nn.functional.one_hot(ids[:-1], v).to(next(model.parameters()).dtype).unsqueeze(0)
    with torch.no_grad():
        logits, _ = model(x)
        return nn.functional.cross_entropy(logits[0], ids[1:]).item()


def train(model, ids, v, opt):
    n = (len(ids) - 1) // (B * T) * T
    per_epoch = n // T
    state = None
    for step in range(STEPS):
        j = step % per_epoch
        if j == 0:
            state = None
        cols = [b * n + j * T + t for b in range(B) for t in range(T)]
        x = ids[cols].view(B, T)
        y = ids[[c + 1 for c in cols]].view(B, T)
        logits, state = model(nn.functional.one_hot(x, v).double(), state)
        state = detach(state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, v), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()


def main():
    text = (FIX / "corpus.txt").read_text(encoding="utf-8")
    vocab = sorted(set(text))
    v = len(vocab)
    ids = torch.tensor([vocab.index(c) for c in text])
    for cell in CELLS:
        torch.manual_seed(7)
        model = CharLM(cell, v).double()
        init = {k: t.detach().clone().contiguous() for k, t in model.state_dict().items()}
        save_file(init, str(FIX / f"init_{cell}.safetensors"))
        losses = {"f64": eval_loss(model, ids, v)}
        m32 = CharLM(cell, v)
        m32.load_state_dict({k: t.float() for k, t in init.items()})
        losses["f32"] = eval_loss(m32, ids, v)
        (FIX / f"eval_{cell}.json").write_text(json.dumps({"vocab_size": v, "hidden": H, "layers": L, **losses}, indent=1))
        for name, make in [("sgd", lambda p: torch.optim.SGD(p, lr=0.5)), ("adam", lambda p: torch.optim.Adam(p, lr=0.01))]:
            model.load_state_dict(init)
            train(model, ids, v, make(model.parameters()))
            after = {k: t.detach().clone().contiguous() for k, t in model.state_dict().items()}
            save_file(after, str(FIX / f"after_{cell}_{name}.safetensors"))
        print(cell, losses)


if __name__ == "__main__":
    main()
