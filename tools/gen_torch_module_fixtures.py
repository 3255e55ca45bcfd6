#!/usr/bin/env python3
"""PyTorch reference files for examples/torch_module.rs, read by tests/torch_module.rs.

    python3 tools/gen_torch_module_fixtures.py

For each case, in tests/fixtures/torch_module/CASE/: module.safetensors (the module's
state_dict as PyTorch names it), input.safetensors (x, and as the case has them h0, c0, lengths,
d_output, d_h_n, d_c_n) and expected.safetensors (output, h_n, c_n, and with d_output the
gradients grad.NAME of every parameter, grad.x, grad.h0, grad.c0), computed by the module in the
input's dtype. The loss whose gradients these are is
sum(d_output * output) + sum(d_h_n * h_n) [+ sum(d_c_n * c_n)].
"""
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures', 'torch_module')

# name, kind, nonlinearity, layers, bidirectional, bias, batch_first, dtype, I, H, B, T, h0, backward,
# lengths (False: none; True: all T; a list: per sample, through pack_padded_sequence(enforce_sorted=False)
# and pad_packed_sequence(total_length=T)), and optionally the LSTM's proj_size (0: none)
CASES = [
    ('bigru_l2_batch_first', 'GRU', 'tanh', 2, True, True, True, torch.float64, 3, 4, 2, 5, True, True, False),
    ('lstm_l2', 'LSTM', 'tanh', 2, False, True, False, torch.float64, 4, 3, 3, 4, True, True, False),
    ('rnn_relu_nobias_f32', 'RNN', 'relu', 1, False, False, False, torch.float32, 5, 6, 2, 3, False, True, False),
    ('bilstm_f32_forward', 'LSTM', 'tanh', 1, True, True, True, torch.float32, 3, 5, 2, 4, False, False, True),
    ('bilstm_l2_lengths', 'LSTM', 'tanh', 2, True, True, False, torch.float64, 3, 4, 4, 6, True, True, [4, 6, 1, 3]),
    ('gru_lengths_batch_first', 'GRU', 'tanh', 1, False, True, True, torch.float64, 2, 3, 3, 5, False, True, [2, 5, 5]),
    # LSTM projections: uni and bidirectional, 1 to 3 layers, with and without bias, lengths, f32.
    ('lstm_proj_l3_lengths', 'LSTM', 'tanh', 3, False, True, False, torch.float64, 4, 5, 3, 5, True, True, [5, 2, 4], 3),
    ('bilstm_proj_l2_nobias_batch_first', 'LSTM', 'tanh', 2, True, False, True, torch.float64, 3, 6, 2, 4, True, True, False, 2),
    ('bilstm_proj_lengths', 'LSTM', 'tanh', 1, True, True, False, torch.float64, 3, 4, 3, 5, True, True, [1, 5, 3], 1),
    ('lstm_proj_f32', 'LSTM', 'tanh', 1, False, True, False, torch.float32, 5, 8, 2, 6, False, True, True, 4),
    # The other cells over three layers: a GRU without bias, a bidirectional tanh RNN with lengths.
    ('gru_l3_nobias', 'GRU', 'tanh', 3, False, False, False, torch.float64, 3, 4, 2, 3, True, True, False),
    ('birnn_l3_lengths_batch_first', 'RNN', 'tanh', 3, True, True, True, torch.float64, 2, 3, 3, 4, True, True, [3, 4, 2]),
]


def run_module(m, kind, x, states, lengths, batch_first, total_length, grads=None):
    """What examples/torch_module.rs writes, as PyTorch computes it: `output` (through
    pack_padded_sequence(enforce_sorted=False) and pad_packed_sequence(total_length=...) when
    `lengths` is given), `h_n`, `c_n` for an LSTM, and, when `grads` is given (called with the
    output, h_n and c_n, it returns a dict with d_output, d_h_n and d_c_n), the gradients of
    sum(d_output * output) + sum(d_h_n * h_n) [+ sum(d_c_n * c_n)]: grad.NAME of every parameter,
    grad.x and grad.h0, grad.c0 for the `states` given (x and the states require gradients)."""
    seq = x
    if lengths is not None:
        seq = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    if kind == 'LSTM':
        out, (hn, cn) = m(seq, (states['h0'], states['c0']) if states else None)
    else:
        out, hn = m(seq, states.get('h0'))
        cn = None
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=total_length)
    res = {'output': out, 'h_n': hn}
    if cn is not None:
        res['c_n'] = cn
    if grads is not None:
        d = grads(out, hn, cn)
        loss = (d['d_output'] * out).sum() + (d['d_h_n'] * hn).sum()
        if cn is not None:
            loss = loss + (d['d_c_n'] * cn).sum()
        loss.backward()
        for n, p in m.named_parameters():
            res['grad.' + n] = p.grad
        res['grad.x'] = x.grad
        for k, v in states.items():
            res['grad.' + k] = v.grad
    return res


def main():
    for num, (name, kind, nl, layers, bi, bias, bf, dt, i, h, b, t, with_h0, backward, lengths, *proj) in enumerate(CASES):
        torch.manual_seed(20261201 + num)
        kw = {'nonlinearity': nl} if kind == 'RNN' else {}
        if proj and proj[0]:
            kw['proj_size'] = proj[0]
        m = getattr(torch.nn, kind)(i, h, num_layers=layers, bias=bias, batch_first=bf, bidirectional=bi, **kw).to(dt)
        d = 2 if bi else 1
        x = torch.randn((b, t, i) if bf else (t, b, i), dtype=dt, requires_grad=True)
        inp = {'x': x}
        states = {}
        if with_h0:
            states['h0'] = torch.randn(layers * d, b, kw.get('proj_size', h), dtype=dt, requires_grad=True)
            if kind == 'LSTM':
                states['c0'] = torch.randn(layers * d, b, h, dtype=dt, requires_grad=True)
            inp.update(states)
        if lengths is True:
            inp['lengths'] = torch.full((b,), t, dtype=torch.int64)
        elif lengths:
            inp['lengths'] = torch.tensor(lengths, dtype=torch.int64)

        def draw(out, hn, cn):
            inp['d_output'] = torch.randn_like(out)
            inp['d_h_n'] = torch.randn_like(hn)
            if cn is not None:
                inp['d_c_n'] = torch.randn_like(cn)
            return inp
        exp = run_module(m, kind, x, states, inp['lengths'] if isinstance(lengths, list) else None, bf, t,
                         draw if backward else None)
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        meta = {'generator': f'tools/gen_torch_module_fixtures.py, torch {torch.__version__}',
                'batch_first': str(bf).lower(), 'nonlinearity': nl}
        save_file({k: v.detach().contiguous() for k, v in m.state_dict().items()}, os.path.join(folder, 'module.safetensors'), metadata=meta)
        save_file({k: v.detach().contiguous() for k, v in inp.items()}, os.path.join(folder, 'input.safetensors'), metadata=meta)
        save_file({k: v.detach().contiguous() for k, v in exp.items()}, os.path.join(folder, 'expected.safetensors'), metadata=meta)
        print(name, sorted(exp))


if __name__ == '__main__':
    main()
