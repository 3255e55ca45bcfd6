#!/usr/bin/env python3
"""Go on training a charlm checkpoint in PyTorch, over several processes, and write one charlm loads.

    python3 tools/continue_in_pytorch.py --checkpoint FILE --corpus TEXT --nproc N --steps S --out DIR [--lr LR]

For a model that outgrows one CPU: the checkpoint (`model.safetensors` of a `charlm train` run)
becomes `nn.LSTM|GRU|RNN` + `nn.Linear`, its vocabulary comes from the file's metadata, and
training goes on with `torch.nn.parallel.DistributedDataParallel` over N processes started with
torch.multiprocessing on this host (MASTER_ADDR=127.0.0.1). On the CPU the processes talk over
the gloo backend; with `--device cuda` each process takes one GPU and NCCL, with the same script.

The training is charlm's: char-rnn's streams (B streams through the training text, T steps per
batch, the state carried from batch to batch without a gradient and reset at each epoch), the mean
cross-entropy, Adam, the gradient's global norm clipped (PyTorch's clip_grad_norm_, as charlm's
--clip-norm). Process r of N takes the streams r·B/N to (r+1)·B/N - 1 and carries their state
itself; DistributedDataParallel averages the N gradients, which is the gradient of the mean over
all B streams, so N processes take the steps one process with all B streams would. B must be a
multiple of N. The optimizer starts afresh (charlm's train_state.json is not read) and the streams
start at the beginning of the text.

The training loss (the mean over every process's batch) is printed every --log-every steps, and
the validation loss before and after: the held-out tail (--val-frac, charlm's split) read as
clamp((len - 1) // 1024, 1, 256) streams, each from a zero state that first reads the 64
characters before its part unscored, as charlm validates, in nats per character.

DIR/model.safetensors is a charlm model file: PyTorch's state_dict names and shapes, the source's
metadata (format, cell, sizes, dtype, vocabulary) and the CRC-32 of the tensor data, so that
`charlm sample --checkpoint`, `charlm eval --checkpoint` and `charlm train --init` read it.
"""
import argparse
import json
import os
import socket
import struct
import sys
import time
import zlib

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn
from torch.nn.parallel import DistributedDataParallel

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
DTYPES = {"f32": torch.float32, "f64": torch.float64}
# The metadata keys every charlm model file carries besides data_crc32 (crates/charlm/src/checkpoint.rs);
# training checkpoints also carry step and val_loss, which describe their weights and are not kept here.
MODEL_KEYS = ("format", "format_version", "cell", "vocab_size", "hidden_size", "num_layers", "dropout", "dtype", "vocab")
# Written only when not zero: the dropout before the head (charlm train --head-dropout).
OPTIONAL_KEYS = ("head_dropout",)


class CharModel(nn.Module):
    """The module whose state_dict a charlm file holds: `rnn.*` and `head.*`."""

    def __init__(self, meta):
        super().__init__()
        self.vocab_size = int(meta["vocab_size"])
        hidden, layers = int(meta["hidden_size"]), int(meta["num_layers"])
        self.rnn = CELLS[meta["cell"]](
            self.vocab_size, hidden, layers, batch_first=True, dropout=float(meta["dropout"])
        )
        self.head_dropout = nn.Dropout(float(meta.get("head_dropout", "0")))
        self.head = nn.Linear(hidden, self.vocab_size)

    def forward(self, ids, state):
        onehot = F.one_hot(ids, self.vocab_size).to(self.head.weight.dtype)
        outputs, state = self.rnn(onehot, state)
        return self.head(self.head_dropout(outputs)), state


def header_and_data(blob):
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def read_charlm_metadata(path):
    with open(path, "rb") as f:
        header, data = header_and_data(f.read())
    meta = header.get("__metadata__") or {}
    if meta.get("format") != "charlm":
        sys.exit(f"{path}: not a charlm model file (its metadata has no format=charlm)")
    if meta.get("format_version") != "1":
        sys.exit(f"{path}: format version {meta.get('format_version')!r}; this script reads version 1")
    crc = f"{zlib.crc32(data):08x}"
    if crc != meta.get("data_crc32"):
        sys.exit(f"{path}: the tensor data is corrupted (CRC-32 {crc}, the header says {meta.get('data_crc32')})")
    missing = [k for k in MODEL_KEYS if k not in meta]
    if missing:
        sys.exit(f"{path}: the metadata lacks {', '.join(missing)}")
    if meta["cell"] not in CELLS or meta["dtype"] not in DTYPES:
        sys.exit(f"{path}: cell {meta['cell']!r} or dtype {meta['dtype']!r} is not one charlm writes")
    return meta


def encode_corpus(path, vocab, val_frac):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        sys.exit(f"{path}: characters outside the checkpoint's vocabulary: {unknown}")
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    held_out = int(len(ids) * val_frac)  # charlm holds out the last floor(len * val_frac)
    return ids[: len(ids) - held_out], ids[len(ids) - held_out :]


def streams(ids, batch, steps):
    """char-rnn's streams: stream b is ids[b·n : (b+1)·n] with its next characters as targets."""
    n = (len(ids) - 1) // (batch * steps) * steps
    return ids[: batch * n].view(batch, n), ids[1 : batch * n + 1].view(batch, n)


def detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


@torch.no_grad()
def validation_loss(model, ids, steps, device, warmup=64, min_stream=1024, max_streams=256):
    """The held-out text as charlm validates it (charlm::train::val_streams and
    charlm::model::evaluate_warm): at most 256 streams of at least 1024 characters in T-step
    chunks, each from a zero state that first reads the 64 characters before its part unscored
    (no warm-up for a text of at most 129 characters)."""
    if len(ids) < 2:
        return float("nan")
    w = warmup if len(ids) > 2 * warmup + 1 else 0
    p = len(ids) - 1 - w
    b = min(max((len(ids) - 1) // min_stream, 1), max_streams, p)
    n = p // b
    # Stream s reads inputs s·n .. s·n + w + n and scores the last n of them.
    idx = torch.arange(b)[:, None] * n + torch.arange(w + n)[None, :]
    x, y = ids[idx].to(device), ids[idx + 1].to(device)
    was_training = model.training
    model.eval()
    total, state, start = 0.0, None, 0
    while start < w + n:
        end = min(start + steps, w) if start < w else min(start + steps, w + n)
        logits, state = model(x[:, start:end], state)
        if start >= w:
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).double(), y[:, start:end].reshape(-1), reduction="sum"
            ).item()
        start = end
    model.train(was_training)
    return total / (b * n)


def write_charlm_file(model, meta, out_dir):
    """DIR/model.safetensors with the source's metadata and the CRC-32 of the new data, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    kept = {k: meta[k] for k in MODEL_KEYS + OPTIONAL_KEYS if k in meta}
    _, data = header_and_data(save(tensors, metadata=kept))
    blob = save(tensors, metadata={**kept, "data_crc32": f"{zlib.crc32(data):08x}"})
    assert header_and_data(blob)[1] == data, "the tensor data moved when the metadata changed"
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.safetensors")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def worker(rank, args, meta, train_ids, val_ids):
    world = args.nproc
    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(args.seed + rank)  # dropout masks differ between processes

    model = CharModel(meta).to(DTYPES[meta["dtype"]])
    model.load_state_dict(load_file(args.checkpoint), strict=True)
    model.to(device)
    ddp = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)

    x_all, y_all = streams(train_ids, args.batch, args.seq_len)
    share = args.batch // world
    x = x_all[rank * share : (rank + 1) * share].to(device)
    y = y_all[rank * share : (rank + 1) * share].to(device)
    per_epoch = x.shape[1] // args.seq_len
    say = print if rank == 0 else (lambda *a, **k: None)
    say(
        f"{world} processes ({'nccl' if cuda else 'gloo'}), {share} of {args.batch} streams each, "
        f"{per_epoch} batches of {args.seq_len} steps per epoch; {meta['num_layers']}x{meta['hidden_size']} "
        f"{meta['cell']} ({meta['dtype']}), vocabulary {meta['vocab_size']}",
        flush=True,
    )
    if rank == 0:
        say(f"step 0: validation loss {validation_loss(model, val_ids, args.seq_len, device):.4f}", flush=True)
    dist.barrier()

    state, started = None, time.time()
    for step in range(1, args.steps + 1):
        j = (step - 1) % per_epoch
        if j == 0:
            state = None  # a new epoch starts every stream from a zero state, as charlm does
        cols = slice(j * args.seq_len, (j + 1) * args.seq_len)
        logits, state = ddp(x[:, cols], detach(state))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, cols].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DistributedDataParallel averages the gradients of the N processes here
        if args.clip_norm > 0:
            nn.utils.clip_grad_norm_(ddp.parameters(), args.clip_norm)
        opt.step()
        if step == 1 or step % args.log_every == 0 or step == args.steps:
            mean = loss.detach().to(torch.float64).clone()
            dist.all_reduce(mean)
            say(
                f"step {step}/{args.steps} epoch {(step - 1) // per_epoch}: train loss {mean.item() / world:.4f} "
                f"({(time.time() - started) / step:.3f} s/step)",
                flush=True,
            )

    if rank == 0:
        val = validation_loss(model, val_ids, args.seq_len, device)
        say(f"step {args.steps}: validation loss {val:.4f}", flush=True)
        say(f"wrote {write_charlm_file(model, meta, args.out)}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a charlm model file (model.safetensors)")
    ap.add_argument("--corpus", required=True, help="the UTF-8 training text")
    ap.add_argument("--nproc", type=int, required=True, help="processes (GPUs with --device cuda)")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps")
    ap.add_argument("--out", required=True, help="the directory for model.safetensors")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate (charlm's default 2e-3)")
    ap.add_argument("--batch", type=int, default=50, help="streams in all, B (a multiple of --nproc)")
    ap.add_argument("--seq-len", type=int, default=50, help="steps per batch, T")
    ap.add_argument("--clip-norm", type=float, default=5.0, help="the gradient's global norm limit (0: none)")
    ap.add_argument("--val-frac", type=float, default=0.1, help="the held-out tail of the text")
    ap.add_argument("--log-every", type=int, default=50, help="print the training loss every N steps")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo) or cuda (NCCL)")
    ap.add_argument("--seed", type=int, default=0, help="dropout's seed (process r uses seed + r)")
    args = ap.parse_args()
    if args.nproc < 1 or args.steps < 1 or args.batch < 1 or args.seq_len < 1 or args.log_every < 1:
        ap.error("--nproc, --steps, --batch, --seq-len and --log-every must be positive")
    if args.batch % args.nproc:
        ap.error(f"--batch {args.batch} does not split into {args.nproc} equal shares")
    if not (args.lr > 0 and 0 <= args.val_frac < 1 and args.clip_norm >= 0):
        ap.error("--lr must be positive, --val-frac in [0, 1), --clip-norm not negative")
    if args.device == "cuda" and torch.cuda.device_count() < args.nproc:
        ap.error(f"--device cuda --nproc {args.nproc}: only {torch.cuda.device_count()} GPUs")

    meta = read_charlm_metadata(args.checkpoint)
    vocab = json.loads(meta["vocab"])
    train_ids, val_ids = encode_corpus(args.corpus, vocab, args.val_frac)
    if (len(train_ids) - 1) // (args.batch * args.seq_len) < 1:
        sys.exit(f"{args.corpus}: {len(train_ids)} training characters are too few for one batch of {args.batch}x{args.seq_len}")

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_loopback_port())
    if args.device == "cpu":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the processes are all on this host
    mp.spawn(worker, args=(args, meta, train_ids, val_ids), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
