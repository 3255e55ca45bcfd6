#!/usr/bin/env python3
"""PyTorch reference values for the recurrent layers (torch.nn.LSTM, GRU, RNN tanh/relu, 1 and 3
layers, and bidirectional with 1 and 2 layers), for the cells (nn.LSTMCell, GRUCell, RNNCell, run
in a loop over the steps) and for the softmax cross-entropy (F.cross_entropy, both reductions), read by
crates/rnn-cells/tests/parity.rs.

Generated with torch 2.15.0 (CPU, float64), seed 20261123 + case number:

    python3 tools/gen_layer_fixtures.py

(A rerun on another CPU reproduces the committed files to about 4e-15 relative, PyTorch's own
rounding differences between machines; the bidirectional cases were added on an Intel Xeon, the
cells on another (model 167) on 2026-12-05, the others written on an AMD EPYC, and the committed
files were kept as they were.)

Each case draws PyTorch's own initial weights, then an input x (T, B, I), initial states (L, B, H)
and loss weights, all rounded to 12 significant digits *before* the computation so the Rust side
reads exactly the numbers PyTorch used. The loss is

    L = sum(w_out * output) + sum(w_hn * h_n) [+ sum(w_cn * c_n) for the LSTM]

and the file records output, h_n (c_n), and the gradients of L with respect to every parameter, x,
h0 (c0), each to 15 significant digits.

Layouts: batch_first=False, so x is (T, B, I) and its row-major flattening is exactly our
column-major `I × (T·B)` matrix (column t·B + b = x[t, b]); the same holds for output (T, B, H) and
for each layer of h0 (B, H) as our `H × B`. Parameters are stored row-major with their shape.
"""
import json
import os
import sys

import torch

SEED = 20261123
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'crates', 'rnn-cells', 'tests',
                       'fixtures', 'layers')

# name, module kind, nonlinearity, num_layers, input, hidden, batch, steps, bias[, bidirectional]
CASES = [
    ('lstm_l1', 'LSTM', None, 1, 3, 3, 2, 3, True),
    ('lstm_l3', 'LSTM', None, 3, 2, 2, 2, 3, True),
    ('lstm_l1_nobias', 'LSTM', None, 1, 3, 3, 2, 2, False),
    ('gru_l1', 'GRU', None, 1, 3, 4, 2, 3, True),
    ('gru_l3', 'GRU', None, 3, 2, 2, 2, 3, True),
    ('rnn_tanh_l1', 'RNN', 'tanh', 1, 3, 4, 2, 3, True),
    ('rnn_tanh_l3', 'RNN', 'tanh', 3, 2, 3, 2, 3, True),
    ('rnn_relu_l1', 'RNN', 'relu', 1, 3, 4, 2, 3, True),
    ('rnn_relu_l3', 'RNN', 'relu', 3, 2, 3, 2, 3, True),
    ('lstm_bi_l1', 'LSTM', None, 1, 3, 3, 2, 4, True, True),
    ('lstm_bi_l2', 'LSTM', None, 2, 2, 3, 3, 3, True, True),
    ('lstm_bi_l2_nobias', 'LSTM', None, 2, 2, 2, 2, 3, False, True),
    ('gru_bi_l1', 'GRU', None, 1, 3, 4, 2, 3, True, True),
    ('gru_bi_l2', 'GRU', None, 2, 2, 3, 2, 4, True, True),
    ('rnn_tanh_bi_l2', 'RNN', 'tanh', 2, 3, 3, 2, 3, True, True),
    ('rnn_relu_bi_l1', 'RNN', 'relu', 1, 3, 4, 2, 3, True, True),
]


def r12(t):
    """Rounds to 12 significant digits (the numbers written to the file)."""
    return torch.tensor([float(f'{v:.12g}') for v in t.flatten().tolist()], dtype=torch.float64).reshape(t.shape)


def flat(t):
    return [float(f'{v:.15g}') for v in t.detach().flatten().tolist()]


def case(num, name, kind, nonlin, layers, i, h, b, t, bias, bidirectional=False):
    torch.manual_seed(SEED + num)
    kw = {'nonlinearity': nonlin} if kind == 'RNN' else {}
    m = getattr(torch.nn, kind)(i, h, num_layers=layers, bias=bias, batch_first=False,
                                bidirectional=bidirectional, **kw).double()
    d = 2 if bidirectional else 1
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(r12(p))
    x = r12(torch.randn(t, b, i, dtype=torch.float64)).requires_grad_()
    h0 = r12(torch.randn(layers * d, b, h, dtype=torch.float64)).requires_grad_()
    w_out = r12(torch.randn(t, b, h * d, dtype=torch.float64))
    w_hn = r12(torch.randn(layers * d, b, h, dtype=torch.float64))
    rec = {'kind': kind.lower(), 'nonlinearity': nonlin or '', 'num_layers': layers, 'input': i,
           'hidden': h, 'batch': b, 'steps': t, 'bias': bias, 'directions': d}
    if kind == 'LSTM':
        c0 = r12(torch.randn(layers * d, b, h, dtype=torch.float64)).requires_grad_()
        w_cn = r12(torch.randn(layers * d, b, h, dtype=torch.float64))
        out, (hn, cn) = m(x, (h0, c0))
        loss = (w_out * out).sum() + (w_hn * hn).sum() + (w_cn * cn).sum()
    else:
        out, hn = m(x, h0)
        loss = (w_out * out).sum() + (w_hn * hn).sum()
    loss.backward()
    return record(rec, m, x, h0, w_out, w_hn, out, hn, (c0, w_cn, cn) if kind == 'LSTM' else None)


def record(rec, m, x, h0, w_out, w_hn, out, hn, lstm):
    """Adds to `rec` the parameters of `m`, their gradients, the inputs, the results and the input
    and initial-state gradients (`lstm`: c0, w_cn and c_n, or None)."""
    rec['params'] = {n: {'shape': list(p.shape), 'data': flat(p)} for n, p in m.named_parameters()}
    rec['grads'] = {n: flat(p.grad) for n, p in m.named_parameters()}
    rec.update(x=flat(x), h0=flat(h0), w_out=flat(w_out), w_hn=flat(w_hn), out=flat(out), h_n=flat(hn),
               d_x=flat(x.grad), d_h0=flat(h0.grad))
    if lstm is not None:
        c0, w_cn, cn = lstm
        rec.update(c0=flat(c0), w_cn=flat(w_cn), c_n=flat(cn), d_c0=flat(c0.grad))
    return rec


# name, cell module, nonlinearity, input, hidden, batch, steps, bias: nn.LSTMCell, nn.GRUCell and
# nn.RNNCell applied at every step in a loop, as a decoder would; the records hold the cell's own
# parameter names (weight_ih, weight_hh, bias_ih, bias_hh) and the layout of a one-layer module
# (h0, h_n, c_n as (1, B, H)), which is what the cell's state_dict loads as.
CELL_CASES = [
    ('lstm_cell', 'LSTMCell', None, 3, 4, 2, 3, True),
    ('gru_cell', 'GRUCell', None, 2, 3, 3, 3, True),
    ('rnn_cell_relu_nobias', 'RNNCell', 'relu', 3, 4, 2, 3, False),
]


def cell_case(num, name, kind, nonlin, i, h, b, t, bias):
    torch.manual_seed(SEED + num)
    kw = {'nonlinearity': nonlin} if kind == 'RNNCell' else {}
    m = getattr(torch.nn, kind)(i, h, bias=bias, **kw).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(r12(p))
    x = r12(torch.randn(t, b, i, dtype=torch.float64)).requires_grad_()
    h0 = r12(torch.randn(1, b, h, dtype=torch.float64)).requires_grad_()
    w_out = r12(torch.randn(t, b, h, dtype=torch.float64))
    w_hn = r12(torch.randn(1, b, h, dtype=torch.float64))
    rec = {'kind': kind[:-4].lower(), 'module': kind, 'nonlinearity': nonlin or '', 'num_layers': 1,
           'input': i, 'hidden': h, 'batch': b, 'steps': t, 'bias': bias, 'directions': 1}
    hs = []
    if kind == 'LSTMCell':
        c0 = r12(torch.randn(1, b, h, dtype=torch.float64)).requires_grad_()
        w_cn = r12(torch.randn(1, b, h, dtype=torch.float64))
        hx, cx = h0[0], c0[0]
        for s in range(t):
            hx, cx = m(x[s], (hx, cx))
            hs.append(hx)
        hn, cn = hx[None], cx[None]
    else:
        hx = h0[0]
        for s in range(t):
            hx = m(x[s], hx)
            hs.append(hx)
        hn = hx[None]
    out = torch.stack(hs)
    loss = (w_out * out).sum() + (w_hn * hn).sum()
    if kind == 'LSTMCell':
        loss = loss + (w_cn * cn).sum()
    loss.backward()
    return record(rec, m, x, h0, w_out, w_hn, out, hn, (c0, w_cn, cn) if kind == 'LSTMCell' else None)


def softmax_ce(seed):
    """F.cross_entropy on logits (T*B, V) (row-major = our V x (T*B)), both reductions."""
    torch.manual_seed(seed)
    t, b, v = 3, 2, 5
    z = r12(torch.randn(t * b, v, dtype=torch.float64) * 3)
    y = torch.randint(0, v, (t * b,))
    rec = {'steps': t, 'batch': b, 'classes': v, 'logits': flat(z), 'targets': y.tolist()}
    for key, red, div in (('mean', 'mean', 1), ('sum_time_mean_batch', 'sum', b)):
        zz = z.clone().requires_grad_()
        loss = torch.nn.functional.cross_entropy(zz, y, reduction=red) / div
        loss.backward()
        rec[key] = {'loss': float(f'{loss.item():.15g}'), 'grad': flat(zz.grad)}
    return rec


def main():
    torch.set_default_dtype(torch.float64)
    os.makedirs(OUT_DIR, exist_ok=True)
    # Layers from seed SEED, cells from SEED + 100: each case's seed stays when cases are added.
    runs = [(num, c, case) for num, c in enumerate(CASES)]
    runs += [(num, c, cell_case) for num, c in enumerate(CELL_CASES, start=100)]
    for num, c, make in runs:
        rec = make(num, *c)
        rec['generator'] = f'tools/gen_layer_fixtures.py, torch {torch.__version__}, seed {SEED + num}'
        path = os.path.join(OUT_DIR, c[0] + '.json')
        with open(path, 'w') as f:
            json.dump(rec, f, separators=(',', ':'))
        print(f'{path}: {os.path.getsize(path)} bytes', file=sys.stderr)
    rec = softmax_ce(SEED + len(CASES))
    rec['generator'] = f'tools/gen_layer_fixtures.py, torch {torch.__version__}, seed {SEED + len(CASES)}'
    with open(os.path.join(OUT_DIR, 'softmax_ce.json'), 'w') as f:
        json.dump(rec, f, separators=(',', ':'))


if __name__ == '__main__':
    main()
