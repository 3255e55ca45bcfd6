#!/usr/bin/env python3
"""PyTorch's side of `examples/bench_table.rs`: the same cases, shapes and timing protocol.

    python3 tools/torch_ref.py THREADS [CASE ...]
    python3 tools/torch_ref.py THREADS --cpu-time [CASE ...]
    python3 tools/torch_ref.py --list
    python3 tools/torch_ref.py THREADS --gemm MxKxN:AB [...]

THREADS is given to torch.set_num_threads (bench_table's --threads). Each case is run 5 times to
warm up, then timed 30 times; the line printed is the case name and the median in milliseconds,
`NAME MEDIAN_MS`, which `cargo run --release --example bench_table -- --table ...` reads. Without
CASE arguments every case runs, in bench_table's order (examples/common/torch_cases.rs, NAMES).

--cpu-time times with this thread's CPU clock (time.thread_time) instead of the wall clock, as
bench_table's --cpu-time does; it only means something with THREADS = 1.

The cases, all in float32 on the CPU, inputs drawn from a generator seeded with 0:
  lm_<cell>_<L>x<H>_b<B>_t<T>_v<V>     one training step of a character model: one-hot input of
                                        B sequences of T characters, an L-layer nn.LSTM/GRU/RNN of
                                        H units, a linear head to V logits, cross-entropy summed
                                        over all predictions and divided by B, backward
  seq_lstm_fwdbwd_i<I>_h<H>_b<B>_t<T>   nn.LSTM over T steps of random input, backward of the
                                        sum of its outputs (the input needs no gradient)
  seq_lstm_fwd_i<I>_h<H>_b1_t<T>        nn.LSTM forward only, batch 1, under torch.no_grad()
  cell_<cell>_fwdbwd_i<I>_h<H>_b<B>     one step of nn.LSTMCell/GRUCell/RNNCell from a random
                                        state, backward of the sum of the new h
  <case>_bf16                           the case of that name with its forward under
                                        torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's
                                        bf16 mixed precision (the loss in float32; bench_table
                                        compares its own bf16 cases with the float32 case, and
                                        prints these beside)
--gemm times single matrix products instead of cases, for `bench_table --gemm --compare`: each
shape MxKxN:AB is `C += op(A)·op(B)` in float32 with op(A) of m × k and op(B) of k × n, A and B
transposed where A or B is `t` (`n`: not), every operand stored column-major as bench_table
stores its matrices (a column-major r × c matrix is a row-major c × r tensor, transposed), by
`C.addmm_` (MKL's sgemm on PyTorch's CPU wheel). One line per shape: `mm_MxKxN_AB MEDIAN_MS`.

Every initial state is a constant (zero or random) that needs no gradient, and gradients are
released (set to None) before each backward, so no run accumulates into the last one's.
"""
import argparse
import re
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

WARMUP_RUNS = 5
TIMED_RUNS = 30


def language_model_step(cell, vocab, hidden, layers, batch, steps, bf16=False):
    """One forward and backward of the character model; returns the closure to time."""
    recurrent = getattr(nn, cell)(vocab, hidden, num_layers=layers, batch_first=True)
    head = nn.Linear(hidden, vocab)
    text = torch.randint(0, vocab, (batch, steps + 1))
    inputs = F.one_hot(text[:, :steps], vocab).to(torch.float32)
    targets = text[:, 1:].reshape(-1)
    weights = [*recurrent.parameters(), *head.parameters()]

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs, _ = recurrent(inputs)
            logits = head(outputs).reshape(batch * steps, vocab)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum") / batch
        for w in weights:
            w.grad = None
        loss.backward()

    return run


def sequence_forward_backward(inputs, hidden, batch, steps, bf16=False):
    lstm = nn.LSTM(inputs, hidden, batch_first=True)
    x = torch.randn(batch, steps, inputs)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs, _ = lstm(x)
        for w in lstm.parameters():
            w.grad = None
        outputs.sum().backward()

    return run


def bidirectional_forward_backward(cell, inputs, hidden, batch, steps):
    rnn = getattr(nn, cell)(inputs, hidden, batch_first=True, bidirectional=True)
    x = torch.randn(batch, steps, inputs)

    def run():
        outputs, _ = rnn(x)
        for w in rnn.parameters():
            w.grad = None
        outputs.sum().backward()

    return run


def variable_lengths(inputs, hidden, batch, steps):
    lstm = nn.LSTM(inputs, hidden, batch_first=True)
    x = torch.randn(batch, steps, inputs)
    lengths = torch.tensor([10 + (37 * b) % 91 for b in range(batch)])

    def run():
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=steps)
        for w in lstm.parameters():
            w.grad = None
        out.sum().backward()

    return run


def streaming(cell, inputs, hidden, steps, bf16=False):
    rnn = getattr(nn, cell)(inputs, hidden, batch_first=True)
    xs = torch.randn(steps, 1, 1, inputs)

    def run():
        # One call per step at batch 1, the state carried from call to call.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            state = None
            for t in range(steps):
                _, state = rnn(xs[t], state)

    return run


def sequence_inference(inputs, hidden, steps, bf16=False):
    lstm = nn.LSTM(inputs, hidden, batch_first=True)
    x = torch.randn(1, steps, inputs)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            lstm(x)

    return run


def single_step(cell, inputs, hidden, batch):
    unit = getattr(nn, cell + "Cell")(inputs, hidden)
    x = torch.randn(batch, inputs)
    if cell == "LSTM":
        state = (torch.randn(batch, hidden), torch.randn(batch, hidden))
    else:
        state = torch.randn(batch, hidden)

    def run():
        new_state = unit(x, state)
        h = new_state[0] if cell == "LSTM" else new_state
        for w in unit.parameters():
            w.grad = None
        h.sum().backward()

    return run


# name -> (builder, arguments), in bench_table's order. The names spell out the shapes.
CASES = {
    "lm_lstm_2x256_b64_t24_v65": (language_model_step, ("LSTM", 65, 256, 2, 64, 24)),
    "lm_lstm_1x128_b32_t50_v65": (language_model_step, ("LSTM", 65, 128, 1, 32, 50)),
    "lm_gru_2x256_b64_t24_v65": (language_model_step, ("GRU", 65, 256, 2, 64, 24)),
    "lm_rnn_1x256_b64_t24_v65": (language_model_step, ("RNN", 65, 256, 1, 64, 24)),
    "seq_lstm_fwdbwd_i256_h256_b64_t24": (sequence_forward_backward, (256, 256, 64, 24)),
    "seq_lstm_fwd_i65_h512_b1_t100": (sequence_inference, (65, 512, 100)),
    "cell_lstm_fwdbwd_i256_h256_b64": (single_step, ("LSTM", 256, 256, 64)),
    "cell_gru_fwdbwd_i256_h256_b64": (single_step, ("GRU", 256, 256, 64)),
    "cell_rnn_fwdbwd_i256_h256_b64": (single_step, ("RNN", 256, 256, 64)),
    "seq_bilstm_fwdbwd_i256_h256_b64_t24": (bidirectional_forward_backward, ("LSTM", 256, 256, 64, 24)),
    "seq_bigru_fwdbwd_i256_h256_b64_t24": (bidirectional_forward_backward, ("GRU", 256, 256, 64, 24)),
    "stream_lstm_i64_h256_t100": (streaming, ("LSTM", 64, 256, 100)),
    "stream_gru_i64_h256_t100": (streaming, ("GRU", 64, 256, 100)),
    "seq_lstm_varlen_fwdbwd_i256_h256_b64_t100": (variable_lengths, (256, 256, 64, 100)),
    "seq_lstm_fwdbwd_i256_h256_b64_t100": (sequence_forward_backward, (256, 256, 64, 100)),
    "seq_lstm_fwd_i65_h512_b1_t100_bf16": (sequence_inference, (65, 512, 100, True)),
    "stream_lstm_i64_h256_t100_bf16": (streaming, ("LSTM", 64, 256, 100, True)),
    "lm_lstm_2x256_b64_t24_v65_bf16": (language_model_step, ("LSTM", 65, 256, 2, 64, 24, True)),
    "lm_gru_2x256_b64_t24_v65_bf16": (language_model_step, ("GRU", 65, 256, 2, 64, 24, True)),
    "seq_lstm_fwdbwd_i256_h256_b64_t24_bf16": (sequence_forward_backward, (256, 256, 64, 24, True)),
}


def matrix_product(shape):
    """C += op(A)·op(B) for a shape `MxKxN:AB` (see --gemm); returns the closure to time."""
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+):([nt])([nt])", shape)
    if match is None:
        raise ValueError(f"shape {shape!r} is not MxKxN:AB with A and B each n or t")
    m, k, n = (int(match.group(i)) for i in (1, 2, 3))
    ta, tb = match.group(4) == "t", match.group(5) == "t"

    def column_major(rows, cols):
        return torch.empty(cols, rows).uniform_(-1.0, 1.0).t()

    a = column_major(k, m).t() if ta else column_major(m, k)
    b = column_major(n, k).t() if tb else column_major(k, n)
    c = column_major(m, n).zero_()

    def run():
        c.addmm_(a, b)

    return run


def median_ms(run, clock):
    for _ in range(WARMUP_RUNS):
        run()
    times = []
    for _ in range(TIMED_RUNS):
        start = clock()
        run()
        times.append(clock() - start)
    times.sort()
    return times[TIMED_RUNS // 2] * 1e3


def main():
    parser = argparse.ArgumentParser(
        description="Time bench_table's cases in PyTorch: one 'NAME MEDIAN_MS' line per case."
    )
    parser.add_argument("threads", type=int, nargs="?", help="torch.set_num_threads (1 or more)")
    parser.add_argument("cases", nargs="*", help="case names (default: every case)")
    parser.add_argument("--cpu-time", action="store_true", help="time with the thread's CPU clock")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--gemm", action="store_true", help="the arguments are product shapes MxKxN:AB")
    args = parser.parse_intermixed_args()  # flags may come before, between or after the names
    if args.list:
        print("\n".join(CASES))
        return
    if args.threads is None or args.threads < 1:
        parser.error("THREADS must be a positive integer")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    if args.gemm:
        torch.set_num_threads(args.threads)
        for shape in args.cases:
            torch.manual_seed(0)
            try:
                run = matrix_product(shape)
            except ValueError as e:
                parser.error(str(e))
            print(f"mm_{shape.replace(':', '_')} {median_ms(run, clock):.4f}", flush=True)
        return
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; the cases are: {', '.join(CASES)}")

    torch.set_num_threads(args.threads)
    for name, (builder, shape) in CASES.items():
        if args.cases and name not in args.cases:
            continue
        torch.manual_seed(0)
        print(f"{name} {median_ms(builder(*shape), clock):.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
