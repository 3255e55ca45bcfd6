#!/usr/bin/env python3
"""Where each bench_table case spends its time: a `perf` profile per case, summed into categories.

    cargo build --release --example bench_table
    python3 tools/profile_cases.py [--threads 1,2] [CASE ...]

For each case and thread count, runs `perf record -e cpu-clock` on
`target/release/examples/bench_table --threads N CASE` (its 5 warm-up and 30 timed runs), reads
`perf report --sort symbol`, and sums the samples of every symbol into the categories below,
printing one Markdown table row per case: the share of the samples (all threads together) in

- products: the matrix kernels (packed GEMM, its micro-kernel, the GEMVs, small products);
- packing: packing operands into strips and writing the strips the time loops keep;
- pointwise: the cells' fused gate passes, forward and backward;
- loss/head: softmax cross-entropy and the affine head's own loops;
- memory: memcpy/memmove/memset (copies, gathers, zeroing);
- waiting: the thread pool (barriers, idle workers spinning or yielding);
- other: everything else (allocation, bookkeeping, the benchmark's own loop).

With two threads a worker that waits spins, so "waiting" is time a core did no work. The case
names are bench_table's (and tools/torch_ref.py's); none given: every case.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
BENCH = os.path.join(ROOT, 'target', 'release', 'examples', 'bench_table')

# The first pattern a symbol matches decides its category (order matters: `pack_` before the
# kernels, because `packed::kernel::pack_b` is packing).
CATEGORIES = [
    ('waiting', r'parallel::|worker_loop|wait_until|Barrier|sched_yield|futex|spin_loop|__schedule|syscall'),
    ('packing', r'pack_|PackedColumns|PackedRows.*pack|PackedLhs.*pack|transpose_into'),
    ('products', r'packed::kernel|packed::gemv|gemv|gemm|matrixmultiply|axpy|sgemm|dgemm|micro'),
    ('pointwise', r'pointwise|column_forward|column_backward'),
    ('loss/head', r'softmax|cross_entropy|log_sum|affine|Affine|logits'),
    ('memory', r'memmove|memcpy|memset|__memcpy|copy_from|clear_page'),
]
ORDER = ['products', 'packing', 'pointwise', 'loss/head', 'memory', 'waiting', 'other']


def case_names():
    """bench_table's cases, in its order (`NAMES` in examples/common/torch_cases.rs)."""
    src = open(os.path.join(ROOT, 'examples', 'common', 'torch_cases.rs')).read()
    block = src[src.index('pub const NAMES'):]
    return re.findall(r'"([a-z0-9_]+)"', block[:block.index('];')])


def profile(case, threads):
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, 'perf.data')
        rec = subprocess.run(['perf', 'record', '-q', '-e', 'cpu-clock', '-o', data, BENCH,
                              '--threads', str(threads), case], capture_output=True, text=True)
        if rec.returncode != 0:
            sys.exit(f'perf record failed for {case}: {rec.stderr.strip()}')
        rep = subprocess.run(['perf', 'report', '-i', data, '--no-children', '--sort', 'symbol',
                              '--stdio', '--percent-limit', '0'], capture_output=True, text=True)
    shares = {k: 0.0 for k in ORDER}
    for line in rep.stdout.splitlines():
        m = re.match(r'\s*([0-9.]+)%\s+\[[.k]\]\s+(.*)', line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        cat = next((name for name, pat in CATEGORIES if re.search(pat, sym)), 'other')
        shares[cat] += pct
    return shares


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', default='1,2', help='thread counts, comma-separated (default 1,2)')
    ap.add_argument('cases', nargs='*')
    args = ap.parse_args()
    if not os.path.exists(BENCH):
        sys.exit('build it first: cargo build --release --example bench_table')
    cases = args.cases or case_names()
    print('| case | threads | ' + ' | '.join(ORDER) + ' |')
    print('|---|---|' + '---|' * len(ORDER))
    for case in cases:
        for t in [int(x) for x in args.threads.split(',')]:
            s = profile(case, t)
            print(f'| {case} | {t} | ' + ' | '.join(f'{s[k]:.0f} %' for k in ORDER) + ' |', flush=True)


if __name__ == '__main__':
    main()
