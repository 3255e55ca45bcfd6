#!/usr/bin/env python3
"""Load a charlm checkpoint into PyTorch and (optionally) evaluate it on a text.

    python3 tools/load_checkpoint.py MODEL.safetensors [--eval TEXT_FILE] [--save-weights OUT]

The model is rebuilt from the file's metadata as

    rnn  = nn.LSTM|GRU|RNN(V, H, L, batch_first=True, dropout=p)
    head = nn.Linear(H, V)

and the tensors are loaded with load_state_dict(strict=True), so a missing, extra or misshapen
tensor is an error. The CRC-32 in the metadata (zlib's, over every byte after the header) is
checked first.

--eval runs the whole text as one stream from a zero state, predicting each character from all
the characters before it, and prints `loss_nats_per_char: X` as `charlm eval` does.
--save-weights writes the state_dict back with safetensors.torch.save_file (a weights-only file
for `charlm train --init`).
"""
import argparse
import json
import struct
import sys
import zlib

import torch
from torch import nn
from safetensors.torch import load_file, save_file

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
DTYPES = {"f32": torch.float32, "f64": torch.float64}


class CharLM(nn.Module):
    def __init__(self, cell, vocab_size, hidden, layers, dropout):
        super().__init__()
        self.rnn = CELLS[cell](vocab_size, hidden, layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, onehot, state=None):
        out, state = self.rnn(onehot, state)
        return self.head(out), state


def read_metadata(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__", {})
    if meta.get("format") != "charlm":
        sys.exit(f"{path}: not a charlm checkpoint (no charlm metadata)")
    crc = f"{zlib.crc32(data[8 + n:]):08x}"
    if crc != meta["data_crc32"]:
        sys.exit(f"{path}: data CRC-32 {crc} does not match the header's {meta['data_crc32']}")
    return meta


def load(path):
    meta = read_metadata(path)
    vocab = json.loads(meta["vocab"])
    model = CharLM(
        meta["cell"], int(meta["vocab_size"]), int(meta["hidden_size"]), int(meta["num_layers"]), float(meta["dropout"])
    ).to(DTYPES[meta["dtype"]])
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    return model, vocab, meta


def eval_loss(model, vocab, text):
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        sys.exit(f"characters not in the vocabulary: {unknown}")
    ids = torch.tensor([index[c] for c in text])
    dtype = next(model.parameters()).dtype
    x = nn.functional.one_hot(ids[:-1], len(vocab)).to(dtype).unsqueeze(0)
    with torch.no_grad():
        logits, _ = model(x)
        return nn.functional.cross_entropy(logits[0], ids[1:], reduction="mean").item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--eval", metavar="TEXT_FILE")
    ap.add_argument("--save-weights", metavar="OUT")
    args = ap.parse_args()
    model, vocab, meta = load(args.checkpoint)
    n = sum(p.numel() for p in model.parameters())
    print(f"loaded {meta['num_layers']}x{meta['hidden_size']} {meta['cell']} ({meta['dtype']}), vocabulary {len(vocab)}, {n} parameters: strict load_state_dict OK")
    if args.eval:
        with open(args.eval, encoding="utf-8") as f:
            text = f.read()
        print(f"loss_nats_per_char: {eval_loss(model, vocab, text):.17g}")
    if args.save_weights:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.save_weights)


if __name__ == "__main__":
    main()
