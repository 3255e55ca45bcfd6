#!/usr/bin/env python3
"""Random PyTorch recurrent modules against examples/torch_module.rs, live (needs torch).

    cargo build --release --example torch_module
    python3 tools/fuzz_torch_module.py [--first SEED] [--count N] [--bits] [--bin PATH]

The committed fixtures (tools/gen_torch_module_fixtures.py) pin twelve configurations; this draws
as many as asked, one per seed, and checks each against PyTorch in the same run: an nn.LSTM,
nn.GRU or nn.RNN (tanh or relu) of 1 to 3 layers, one or two directions, with or without bias,
an LSTM projection (proj_size) three times in ten, batch-first or not, no lengths, every length T
or lengths of their own (pack_padded_sequence(enforce_sorted=False), pad_packed_sequence), with
or without h0 (and c0), forward only or forward and backward, in float64 (shapes up to 9) or
float32 (half of them up to 600 features, 130 samples and 30 steps, where the f32 kernels split
k into blocks and the time loops run on both threads). The state_dict is saved as PyTorch would
save it in other ways too: a one-layer module's three times in ten under a cell's names
(nn.LSTMCell's weight_ih, ...: ours runs it as that one-layer module), a quarter of the modules
inside a whole model's state_dict (under model.rnn., beside a head and an int64 buffer, read
with --prefix), and two in five float32 modules with float16 or bfloat16 weights (the module
then computes with those values, widened).

Each module's state_dict and input are written to safetensors files, torch_module runs them, and
every tensor it writes (output, h_n, c_n, grad.NAME of every parameter, grad.x, grad.h0,
grad.c0) is compared with PyTorch's, as max |ours - reference| / (max |reference| + 1):

- float64: the reference is PyTorch in float64; the error must be at most 1e-10.
- float32: the reference is PyTorch in float64 on the same (f32) weights and inputs; the error
  must be at most 2e-4, or at most 4 times PyTorch's own float32 error against that reference,
  whichever is larger: a relu RNN whose pre-activations sit at the kink, for one, gives PyTorch's
  float32 gradients an error of 1e-2 against float64, and ours the same. A relu RNN that fails
  this with a pre-activation within 1e-5 of zero (in float64) is reported apart and not counted:
  float32 may round it to either side of the kink, and then the gradients that flow through it
  differ at every earlier step, PyTorch's float32 ones as much as ours when they fall the other
  way.

With --bits, each module runs twice more, with one thread and with two under the AVX2 cap
(RNN_NUM_THREADS, RNN_MAX_SIMD), and every tensor must be the first run's bits exactly.

It prints each failure (seed, configuration, the tensor, both errors) and a summary; the exit
code is 1 if any seed failed. A seed gives the same module and input on any machine.
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import warnings

import torch
from safetensors.torch import load_file, save_file

from gen_torch_module_fixtures import run_module

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
BIN = os.path.join(ROOT, 'target', 'release', 'examples', 'torch_module')


def config(seed):
    """The module, input and flags that `seed` draws."""
    rnd = random.Random(seed)
    c = {'kind': rnd.choice(['LSTM', 'GRU', 'RNN'])}
    c['nl'] = rnd.choice(['tanh', 'relu']) if c['kind'] == 'RNN' else 'tanh'
    c['layers'] = rnd.randint(1, 3)
    c['bi'] = rnd.random() < 0.5
    c['bias'] = rnd.random() < 0.7
    c['bf'] = rnd.random() < 0.5
    c['dt'] = rnd.choice([torch.float64, torch.float32])
    big = c['dt'] == torch.float32 and rnd.random() < 0.5
    c['i'] = rnd.randint(1, 600 if big else 9)
    c['h'] = rnd.randint(1, 600 if big else 9)
    c['b'] = rnd.randint(1, 130 if big else 6)
    c['t'] = rnd.randint(1, 30 if big else 8)
    c['proj'] = rnd.randint(1, c['h'] - 1) if c['kind'] == 'LSTM' and c['h'] > 1 and rnd.random() < 0.3 else 0
    c['h0'] = rnd.random() < 0.5
    c['backward'] = rnd.random() < 0.8
    mode = rnd.choice(['none', 'all', 'own'])
    c['lengths'] = [rnd.randint(1, c['t']) for _ in range(c['b'])] if mode == 'own' else mode == 'all'
    # How the state_dict is saved (drawn last, so that the draws above stay each seed's): a cell's
    # names (nn.LSTMCell, ...) for a one-layer module; inside a whole model's state_dict, selected
    # by --prefix; float16 or bfloat16 weights for a float32 module.
    c['cell'] = c['layers'] == 1 and not c['bi'] and not c['proj'] and rnd.random() < 0.3
    c['prefix'] = rnd.random() < 0.25
    c['half'] = rnd.choice([None, None, None, torch.float16, torch.bfloat16]) if c['dt'] == torch.float32 else None
    return c


def describe(c):
    lengths = 'own lengths' if isinstance(c['lengths'], list) else ('lengths T' if c['lengths'] else 'no lengths')
    return (f"{c['kind']}{'(' + c['nl'] + ')' if c['kind'] == 'RNN' else ''} layers={c['layers']} "
            f"bidirectional={c['bi']} bias={c['bias']} batch_first={c['bf']} {str(c['dt'])[6:]} "
            f"I={c['i']} H={c['h']} B={c['b']} T={c['t']} proj_size={c['proj']} h0={c['h0']} "
            f"backward={c['backward']} {lengths}"
            f"{' as a cell' if c['cell'] else ''}{' under a prefix' if c['prefix'] else ''}"
            f"{' in ' + str(c['half'])[6:] if c['half'] else ''}")


def module(c, dt):
    """The PyTorch module of configuration `c`, in `dt` (its weights drawn by PyTorch's RNG)."""
    kw = {'nonlinearity': c['nl']} if c['kind'] == 'RNN' else {}
    if c['proj']:
        kw['proj_size'] = c['proj']
    return getattr(torch.nn, c['kind'])(c['i'], c['h'], num_layers=c['layers'], bias=c['bias'],
                                        batch_first=c['bf'], bidirectional=c['bi'], **kw).to(dt)


# The state tensors, `[L·D, B, H]` for a module, `[B, H]` for a cell (as nn.LSTMCell's hx).
STATES = ('h0', 'c0', 'd_h_n', 'd_c_n', 'h_n', 'c_n', 'grad.h0', 'grad.c0')


def reference(c, state, inp, dt):
    """PyTorch's tensors for the module `state` on the input `inp` (states shaped as the
    module's), computed in `dt`, named and shaped as torch_module writes them (a cell's gradients
    under its own names, without `_l0`, its states `[B, H]`)."""
    m = module(c, dt)
    m.load_state_dict({k: v.to(dt) for k, v in state.items()})
    x = inp['x'].to(dt).detach().clone().requires_grad_(True)
    states = {k: inp[k].to(dt).detach().clone().requires_grad_(True) for k in ('h0', 'c0') if k in inp}
    grads = (lambda *_: {k: v.to(dt) for k, v in inp.items() if k.startswith('d_')}) if 'd_output' in inp else None
    lengths = inp['lengths'] if isinstance(c['lengths'], list) else None
    res = run_module(m, c['kind'], x, states, lengths, c['bf'], c['t'], grads)
    if c['cell']:
        res = {k.replace('_l0', ''): v[0] if k in STATES else v for k, v in res.items()}
    return {k: v.detach().double() for k, v in res.items()}


def relu_margin(c, state, inp):
    """The smallest |pre-activation| of a relu RNN's real steps, in float64. Within float32's
    rounding of its sum (about 6e-8 of the sum of its terms' magnitudes, a few 1e-6 at the sizes
    drawn here), float32 may put it on the other side of the kink than float64 does, and the
    gradients that flow through it then differ at every earlier step, PyTorch's float32 ones as
    much as ours."""
    x = inp['x'].double()
    if c['bf']:
        x = x.transpose(0, 1)
    t_len, b = x.shape[0], x.shape[1]
    lengths = inp['lengths'].tolist() if 'lengths' in inp else [t_len] * b
    dirs = ['', '_reverse'] if c['bi'] else ['']
    margin, layer_in = float('inf'), x
    for layer in range(c['layers']):
        outs = []
        for k, d in enumerate(dirs):
            w = state[f'weight_ih_l{layer}{d}'].double()
            u = state[f'weight_hh_l{layer}{d}'].double()
            bias = state[f'bias_ih_l{layer}{d}'].double() + state[f'bias_hh_l{layer}{d}'].double() if c['bias'] else 0.0
            h = inp['h0'][layer * len(dirs) + k].double() if 'h0' in inp else torch.zeros(b, u.shape[0], dtype=torch.float64)
            hs = [None] * t_len
            for t in (range(t_len) if d == '' else range(t_len - 1, -1, -1)):
                z = layer_in[t] @ w.T + h @ u.T + bias
                active = torch.tensor([t < n for n in lengths])
                if active.any():
                    margin = min(margin, z[active].abs().min().item())
                h = torch.where(active[:, None], torch.relu(z), h)
                hs[t] = torch.where(active[:, None], h, torch.zeros_like(h))
            outs.append(torch.stack(hs))
        layer_in = torch.cat(outs, dim=-1)
    return margin


def error(got, ref):
    return (got - ref).abs().max().item() / (ref.abs().max().item() + 1.0) if ref.numel() else 0.0


# With --bits, the environments torch_module runs in again, each of whose results must equal the
# first run's bit for bit: one thread, and two under the AVX2 cap (the AVX-512 and AVX2 kernels
# give the same bits; the `portable` cap runs f32 products on matrixmultiply, other bits).
BIT_RUNS = [{'RNN_NUM_THREADS': '1'}, {'RNN_NUM_THREADS': '2', 'RNN_MAX_SIMD': 'avx2'}]


def check(seed, binary, folder, bits=False):
    """None if torch_module agrees with PyTorch on the seed's module (and, with `bits`, with
    itself under BIT_RUNS), else what went wrong ('kink': see relu_margin)."""
    c = config(seed)
    torch.manual_seed(seed)
    m = module(c, c['dt'])
    dt, d = c['dt'], 2 if c['bi'] else 1
    inp = {'x': torch.randn((c['b'], c['t'], c['i']) if c['bf'] else (c['t'], c['b'], c['i']), dtype=dt)}
    if c['h0']:
        inp['h0'] = torch.randn(c['layers'] * d, c['b'], c['proj'] or c['h'], dtype=dt)
        if c['kind'] == 'LSTM':
            inp['c0'] = torch.randn(c['layers'] * d, c['b'], c['h'], dtype=dt)
    if c['lengths'] is True:
        inp['lengths'] = torch.full((c['b'],), c['t'], dtype=torch.int64)
    elif c['lengths']:
        inp['lengths'] = torch.tensor(c['lengths'], dtype=torch.int64)
    state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    # What the file holds: the weights in half precision (the module then has those values), under
    # a cell's names, inside a whole model's state_dict.
    saved = state
    if c['half']:
        saved = {k: v.to(c['half']) for k, v in state.items()}
        state = {k: v.to(dt) for k, v in saved.items()}
    if c['cell']:
        saved = {k.replace('_l0', ''): v for k, v in saved.items()}
    if c['prefix']:
        saved = {'model.rnn.' + k: v for k, v in saved.items()}
        saved['model.head.weight'] = torch.randn(3, 2, dtype=dt)
        saved['model.norm.num_batches_tracked'] = torch.tensor(5)
    if c['backward']:
        t = c['t']
        out_shape = (c['b'], t, d * (c['proj'] or c['h'])) if c['bf'] else (t, c['b'], d * (c['proj'] or c['h']))
        inp['d_output'] = torch.randn(out_shape, dtype=dt)
        inp['d_h_n'] = torch.randn(c['layers'] * d, c['b'], c['proj'] or c['h'], dtype=dt)
        if c['kind'] == 'LSTM':
            inp['d_c_n'] = torch.randn(c['layers'] * d, c['b'], c['h'], dtype=dt)
    paths = {k: os.path.join(folder, k + '.safetensors') for k in ('module', 'input', 'output')}
    save_file({k: v.contiguous() for k, v in saved.items()}, paths['module'])
    # A cell's states as the cell takes them, [B, H].
    save_file({k: (v[0] if c['cell'] and k in STATES else v).contiguous() for k, v in inp.items()}, paths['input'])
    if os.path.exists(paths['output']):
        os.remove(paths['output'])
    args = [binary, '--module', paths['module'], '--input', paths['input'], '--output', paths['output']]
    if c['bf']:
        args.append('--batch-first')
    if c['kind'] == 'RNN':
        args += ['--nonlinearity', c['nl']]
    if c['prefix']:
        args += ['--prefix', 'model.rnn']
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        return f'{describe(c)}: torch_module failed: {run.stderr.strip()}'
    got = load_file(paths['output'])
    ref = reference(c, state, inp, torch.float64)
    own = None  # PyTorch's float32 tensors, computed only when ours are past 2e-4
    if sorted(got) != sorted(ref):
        return f'{describe(c)}: tensors {sorted(got)}, PyTorch has {sorted(ref)}'
    at_kink = False
    for k in sorted(ref):
        if tuple(got[k].shape) != tuple(ref[k].shape):
            return f'{describe(c)}: {k} has shape {tuple(got[k].shape)}, PyTorch {tuple(ref[k].shape)}'
        ours = error(got[k].double(), ref[k])
        if dt == torch.float64:
            if ours > 1e-10:
                return f'{describe(c)}: {k} error {ours:.3g} > 1e-10'
        else:
            if ours <= 2e-4:
                continue
            own = own or reference(c, state, inp, dt)
            theirs = error(own[k], ref[k])
            if ours > 4 * theirs:
                if c['nl'] == 'relu' and relu_margin(c, state, inp) < 1e-5:
                    at_kink = True
                    break
                return f"{describe(c)}: {k} error {ours:.3g} against float64, PyTorch's float32 {theirs:.3g}"
    for env in BIT_RUNS if bits else []:
        again = list(args)
        again[again.index('--output') + 1] = os.path.join(folder, 'again.safetensors')
        run = subprocess.run(again, capture_output=True, text=True, env=dict(os.environ, **env))
        if run.returncode != 0:
            return f'{describe(c)}: torch_module failed with {env}: {run.stderr.strip()}'
        other = load_file(os.path.join(folder, 'again.safetensors'))
        differ = [k for k in sorted(got) if not torch.equal(got[k], other[k])]
        if differ:
            return f'{describe(c)}: with {env}, other bits in {differ}'
    return 'kink' if at_kink else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--first', type=int, default=0, help='the first seed (default 0)')
    ap.add_argument('--count', type=int, default=200, help='how many seeds (default 200)')
    ap.add_argument('--bin', default=BIN, help='the torch_module binary (default: the release build)')
    ap.add_argument('--bits', action='store_true',
                    help='also run each module with one thread and with two under the AVX2 cap; '
                         'the results must be the same bits')
    a = ap.parse_args()
    # PyTorch runs an LSTM with a projection without oneDNN, and says so once per process.
    warnings.filterwarnings('ignore', message='LSTM with projections')
    if not os.path.exists(a.bin):
        sys.exit(f'{a.bin} not found: run `cargo build --release --example torch_module` first')
    failed, kinks = 0, 0
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(a.first, a.first + a.count):
            msg = check(seed, a.bin, folder, a.bits)
            if msg == 'kink':
                kinks += 1
                print(f"seed {seed}: {describe(config(seed))}: a pre-activation within 1e-5 of relu's "
                      'kink, where float32 may round to either side: not counted', flush=True)
            elif msg:
                failed += 1
                print(f'seed {seed}: {msg}', flush=True)
    agree = a.count - failed - kinks
    print(f'{a.count} seeds from {a.first}: {agree} agree with PyTorch, {failed} do not, {kinks} at a relu kink')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
