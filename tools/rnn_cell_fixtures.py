#!/usr/bin/env python3
"""PyTorch reference values for the vanilla RNN cell and the binary losses (stage 2).

Writes crates/rnn-cells/tests/fixtures/rnn_torch.json, read by crates/rnn-cells/tests/rnn_torch.rs.
Everything is float64. Run from the repository root: python3 tools/rnn_cell_fixtures.py

RNN cases: torch.nn.RNN(I, H, nonlinearity, bias) with its default initialisation under a fixed
seed, input x of shape (T, B, I), initial state h0 (1, B, H), and the loss
    L = sum(out * w_out) + sum(h_n * w_final)
so that dL/d out = w_out and dL/d h_n = w_final. Recorded: out, h_n and the gradients of every
parameter, of x and of h0. Matrices are stored row-major as nested lists in PyTorch's layout;
sequences as (T, B, features).

Loss cases: logits z and targets y of shape (N,), BCEWithLogits with reduction 'sum' and 'mean',
and 0.5 * sum((sigmoid(z) - y)^2) (the tutorial's squared error), each with dL/dz.
"""
import json
import os

import torch

torch.set_default_dtype(torch.float64)


def tolist(t):
    return t.detach().tolist()


def rnn_case(seed, I, H, T, B, nonlinearity, bias):
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(I, H, nonlinearity=nonlinearity, bias=bias)
    x = torch.randn(T, B, I, requires_grad=True)
    h0 = (0.5 * torch.randn(1, B, H)).requires_grad_(True)
    w_out = torch.randn(T, B, H)
    w_final = torch.randn(1, B, H)
    out, h_n = rnn(x, h0)
    loss = (out * w_out).sum() + (h_n * w_final).sum()
    loss.backward()
    params = {name: tolist(p) for name, p in rnn.named_parameters()}
    grads = {name: tolist(p.grad) for name, p in rnn.named_parameters()}
    return {
        "nonlinearity": nonlinearity,
        "bias": bias,
        "input": I,
        "hidden": H,
        "steps": T,
        "batch": B,
        "params": params,
        "x": tolist(x),
        "h0": tolist(h0[0]),
        "w_out": tolist(w_out),
        "w_final": tolist(w_final[0]),
        "out": tolist(out),
        "h_n": tolist(h_n[0]),
        "loss": loss.item(),
        "grads": grads,
        "d_x": tolist(x.grad),
        "d_h0": tolist(h0.grad[0]),
    }


def loss_case(seed, n):
    torch.manual_seed(seed)
    z = (4 * torch.randn(n)).requires_grad_(True)
    y = (torch.rand(n) < 0.5).double()
    out = {"z": tolist(z), "y": tolist(y)}
    for name, fn in [
        ("bce_sum", lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum")),
        ("bce_mean", lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="mean")),
        ("sse_sum", lambda z: 0.5 * ((torch.sigmoid(z) - y) ** 2).sum()),
    ]:
        if z.grad is not None:
            z.grad = None
        loss = fn(z)
        loss.backward()
        out[name] = {"loss": loss.item(), "grad": tolist(z.grad)}
    return out


def main():
    cases = []
    seed = 0
    for nonlinearity in ["tanh", "relu"]:
        for bias in [True, False]:
            for (I, H, T, B) in [(3, 4, 5, 2), (1, 6, 3, 1)]:
                cases.append(rnn_case(seed, I, H, T, B, nonlinearity, bias))
                seed += 1
    fixture = {
        "generator": "tools/rnn_cell_fixtures.py",
        "torch": torch.__version__,
        "rnn": cases,
        "losses": [loss_case(100, 12), loss_case(101, 5)],
    }
    path = os.path.join("crates", "rnn-cells", "tests", "fixtures", "rnn_torch.json")
    with open(path, "w") as f:
        json.dump(fixture, f, indent=1)
    print(f"wrote {len(cases)} RNN cases and {len(fixture['losses'])} loss cases to {path}")


if __name__ == "__main__":
    main()
