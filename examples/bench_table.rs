//! Times every case of `tools/torch_ref.py` (PyTorch's side) with the same protocol (median of 30 runs
//! after 5 warm-up runs) and prints one line per case:
//!
//! ```text
//! NAME MEDIAN_MS  # GFLOP/s, peak memory of one run, allocations per run
//! ```
//!
//! Peak memory is measured by a counting global allocator: the most heap bytes the case holds at
//! any moment of one run (parameters, gradients, caches, inputs and temporaries), counted from
//! before the case was built.
//!
//! ```text
//! cargo run --release --example bench_table -- [--threads N] [--max-simd LEVEL] [--products] [CASE ...]
//! cargo run --release --example bench_table -- --gemm [--threads N] [--max-simd LEVEL]
//! cargo run --release --example bench_table -- --gemm --compare ROUNDS [--threads N] [--max-simd LEVEL]
//! cargo run --release --example bench_table -- --table OURS1 TORCH1 OURS2 TORCH2
//! ```
//!
//! - `--threads N` (1 or 2): the threads of the library's pool (`rnn_tensor::parallel`: the f32
//!   products on CPUs with AVX-512 or AVX2 and the recurrent layers' time loops, split by batch columns) and
//!   of matrixmultiply (it reads `MATMUL_NUM_THREADS` once, before its first product; this
//!   program sets it to `N` unless it is set in the environment already). Results are
//!   bit-identical for any thread count: every part is computed as it would be on one thread.
//! - `--max-simd avx2|avx512|portable`: caps every kernel of the library for the run
//!   (`rnn_tensor::simd::set_max_level`: the f32 GEMM's micro-kernel, the batch-1 strip GEMV's
//!   kernel, the AVX2 and AVX-512 builds of the gate loops; the environment variable `RNN_MAX_SIMD` does the
//!   same), so that a machine with AVX-512 measures what one with AVX2 and FMA runs. With
//!   `--compare`, PyTorch is restricted likewise: `ATEN_CPU_CAPABILITY` (`avx2` or `default`),
//!   `MKL_ENABLE_INSTRUCTIONS` (`AVX2` or `SSE4_2`) and `ONEDNN_MAX_CPU_ISA` (`AVX2` or `SSE41`:
//!   oneDNN runs PyTorch's LSTM and GRU layers and ignores the other two) in torch_ref.py's
//!   environment (no restriction for `avx512`). matrixmultiply, which f64 products and the `mmul` column of
//!   `--gemm` use, picks its kernel from the CPU: the cap does not reach it.
//! - `--cpu-time`: time with the thread's CPU clock instead of the wall clock: on a loaded machine
//!   this leaves out the time the thread waits for a core (one thread only; not the protocol of
//!   torch_ref.py, so not for the table).
//! - `--products`: after each case's line, the f32 GEMM's products it ran, timed where they
//!   ran (`rnn_tensor::packed::times`): per shape `m × k × n` and route, the calls and
//!   milliseconds per run and the GFLOP/s, most time first, and the products' share of the
//!   case's time. A product timed alone (`--gemm`) has its operands in cache; here they come
//!   from wherever the case left them. The timers cost about 0.1 µs a call.
//! - `--digest`: print a digest of each case's results (gradients, loss, final state) after the
//!   timed runs instead of its time: the same digest for `--threads 1` and `--threads 2` shows the
//!   results are bit-identical.
//! - `--gemm`: the throughput (GFLOP/s) of the matrix products the cases are made of, on their
//!   shapes and layouts, the bound on what the cases can reach: matrixmultiply, our `gemm` and
//!   `gemm_packed` side by side (`--threads` also sets `parallel::set_num_threads`; with
//!   `--cpu-time` and two threads only the calling thread's time counts, so use the wall clock).
//!   `gemm_packed_pair` (both operands packed outside the timing, the route of the time loops'
//!   step products) is the fourth column.
//!   With `--compare ROUNDS`: MKL's side in the same sitting, `ROUNDS` rounds each timing our
//!   `gemm`, `gemm_packed` and `gemm_packed_pair` on every product, then
//!   `tools/torch_ref.py THREADS --gemm` (PyTorch's `addmm_`, MKL's `sgemm`, on the same
//!   layouts); prints MKL's GFLOP/s and the median over the rounds of our throughput over MKL's,
//!   with the range (`--max-simd` restricts MKL likewise).
//! - `--table`: reads four files of `NAME MEDIAN_MS` lines (ours and torch_ref.py's, one and two
//!   threads) and prints the Markdown table of docs/PERFORMANCE.md.
//! - `--compare ROUNDS [CASE ...]`: the protocol of the project's comparisons, in one command:
//!   `ROUNDS` rounds, each running this program and `tools/torch_ref.py` (with `$PYTHON`, default
//!   `python3`) one after the other, with one thread and then two, each in a process of its own;
//!   prints per case and thread count the median over the rounds of PyTorch's time over ours, with
//!   the range. Only ratios from the same sitting mean anything on a shared machine. When the
//!   variable-length case and its padded counterpart (`seq_lstm_fwdbwd_i256_h256_b64_t100`, the
//!   same batch with every sample 100 steps long) both ran, it first prints, for ours and for
//!   PyTorch's, the variable-length time over the padded time scaled by the share of real steps
//!   (1.0: the cost follows the real steps exactly). Each round also measures the FMA peak of one
//!   core (`rnn_tensor::simd::fma_peak_gflops`), and the table's last column, "at peak", is the
//!   bound of each f32 case: PyTorch's median time over the time its matrix-product flops would
//!   take at that peak on every thread with nothing else done, the greatest ratio any kernel
//!   could reach in that sitting. With one thread each round also runs this program with
//!   `--products`, and the column "products only" is PyTorch's time over the time our own
//!   products take inside the case (their share of the case's time in that run, applied to our
//!   time): the ratio we would reach if nothing but our products took time, at the rate they run
//!   there. Where it is below a target, no work outside the products can reach it; `--gemm
//!   --compare` shows how those products compare with MKL's. (Not for the batch-1 and streamed
//!   cases: the timers do not see their GEMVs.) The last two columns are the medians of the two
//!   sides' times in milliseconds (PyTorch's f32 twin for a bf16 case), from which a bound in
//!   time can be drawn within the sitting (docs/PERFORMANCE.md, "What bounds the misses").

#[path = "common/torch_cases.rs"]
mod torch_cases;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use rnn::tensor::alloc::LineAligned;
use rnn::tensor::packed::bf16::{Bf16Pairs, PackedBf16};
use rnn::tensor::packed::times;
use rnn::tensor::simd::{self, Level};
use rnn::tensor::{
    gemm, gemm_flops, gemm_packed, gemm_packed_pair, parallel, Mat, PackedLhs, Rng, Scalar, Trans,
};

/// The allocator of the project's programs ([`LineAligned`]: large blocks on 64-byte lines, as
/// PyTorch's tensors), counting live bytes, their peak, and allocations.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `LineAligned`; the counters do not affect allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract.
        unsafe { LineAligned.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: the caller's contract.
        unsafe { LineAligned.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract.
        unsafe { LineAligned.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WARMUP: usize = 5;
const REPS: usize = 30;

/// Whether to print each case's result digest instead of its time (`--digest`).
static DIGEST: AtomicUsize = AtomicUsize::new(0);

/// Whether to print the products each case ran, timed in place (`--products`).
static PRODUCTS: AtomicUsize = AtomicUsize::new(0);

/// Whether to time with this thread's CPU clock instead of the wall clock (`--cpu-time`).
static CPU_TIME: AtomicUsize = AtomicUsize::new(0);

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Seconds of CPU time this thread has used (Linux `CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_seconds() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Milliseconds one call of `f` takes, on the wall clock or (with `--cpu-time`) this thread's
/// CPU clock.
fn time_ms(f: &mut impl FnMut()) -> f64 {
    if CPU_TIME.load(Relaxed) == 1 {
        let t0 = thread_cpu_seconds();
        f();
        (thread_cpu_seconds() - t0) * 1e3
    } else {
        let t0 = Instant::now();
        f();
        t0.elapsed().as_secs_f64() * 1e3
    }
}

/// Median of `REPS` timed runs after `WARMUP` runs, in milliseconds (torch_ref.py's protocol).
fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut ts: Vec<f64> = (0..REPS).map(|_| time_ms(&mut f)).collect();
    ts.sort_by(f64::total_cmp);
    ts[REPS / 2]
}

fn run_cases(names: &[String]) {
    for name in torch_cases::names_here() {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let base = LIVE.load(Relaxed);
        let mut case = torch_cases::build(name).expect("every listed case builds");
        let timed = PRODUCTS.load(Relaxed) == 1;
        if timed {
            times::reset_product_times();
            times::set_product_timing(true);
        }
        let ms = median_ms(&mut case.run);
        times::set_product_timing(false);
        // One more run with the counters reset: its peak and its allocation count.
        PEAK.store(LIVE.load(Relaxed), Relaxed);
        let allocs0 = ALLOCS.load(Relaxed);
        (case.run)();
        let peak = PEAK.load(Relaxed) - base;
        let allocs = ALLOCS.load(Relaxed) - allocs0;
        if DIGEST.load(Relaxed) == 1 {
            let d = case.digest();
            println!("{} digest {d:016x}", case.name);
            continue;
        }
        let gflops = case.flops / (ms * 1e-3) / 1e9;
        println!(
            "{} {ms:.3}  # {gflops:.1} GFLOP/s, peak {:.1} MiB, {allocs} allocations per run",
            case.name,
            peak as f64 / (1 << 20) as f64
        );
        if timed {
            print_products(ms);
        }
        drop(case);
    }
}

/// The table of `--products`: the products timed over the `WARMUP + REPS` runs of a case whose
/// median run took `ms`, per run, most time first.
fn print_products(ms: f64) {
    let mut rows = times::product_times();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let runs = (WARMUP + REPS) as f64;
    let mut total = 0.0;
    for r in &rows {
        let per_run = r.seconds * 1e3 / runs;
        total += per_run;
        println!(
            "#   {:>5} × {:>5} × {:>5}  {:<34} {:>6.1} calls {:>8.3} ms {:>6.1} GFLOP/s",
            r.m,
            r.k,
            r.n,
            r.route,
            r.calls as f64 / runs,
            per_run,
            r.gflops()
        );
    }
    println!(
        "#   products: {total:.3} ms a run (the mean over {runs} runs), {:.0} % of the median run",
        100.0 * total / ms
    );
}

/// The products the cases are made of: `(label, m, k, n, op(A) transposed, op(B) transposed)`.
/// The step products also appear with half the batch (`B = 32`), as two threads splitting the
/// batch compute them. The one-step cells' weight gradients sum over the batch alone (`k = B`).
const GEMM_SHAPES: [(&str, usize, usize, usize, bool, bool); 22] = [
    ("square 1024", 1024, 1024, 1024, false, false),
    ("lstm step W_hh·h (4H=1024, H=256, B=64)", 1024, 256, 64, false, false),
    ("lstm step W_hh·h, half batch", 1024, 256, 32, false, false),
    ("lstm step W_hhᵀ·da", 256, 1024, 64, true, false),
    ("lstm step W_hhᵀ·da, half batch", 256, 1024, 32, true, false),
    ("lstm input W_ih·X (T·B=1536)", 1024, 256, 1536, false, false),
    ("lstm dW = dA·Xᵀ", 1024, 1536, 256, false, true),
    ("lstm dX = W_ihᵀ·dA", 256, 1024, 1536, true, false),
    ("lstm cell dW = dA·xᵀ (one step, k = B = 64)", 1024, 64, 256, false, true),
    ("gru step W_hh·h (3H=768)", 768, 256, 64, false, false),
    ("gru step W_hh·h, half batch", 768, 256, 32, false, false),
    ("gru cell dW = dA·xᵀ (one step, k = B = 64)", 768, 64, 256, false, true),
    ("rnn step W_hh·h (H=256)", 256, 256, 64, false, false),
    ("rnn step W_hh·h, half batch", 256, 256, 32, false, false),
    ("rnn cell dW = dA·xᵀ (one step, k = B = 64)", 256, 64, 256, false, true),
    ("lm_lstm_1x128 step W_hh·h (4H=512, B=32)", 512, 128, 32, false, false),
    ("lm_lstm_1x128 step W_hhᵀ·da", 128, 512, 32, true, false),
    ("head W·H (V=65)", 65, 256, 1536, false, false),
    ("head dW = dY·Hᵀ", 65, 1536, 256, false, true),
    ("head dH = Wᵀ·dY", 256, 65, 1536, true, false),
    ("gemv W_hh·h (4H=2048, H=512, B=1)", 2048, 512, 1, false, false),
    ("gemv W_hh·h (4H=1024, H=256, B=1)", 1024, 256, 1, false, false),
];

/// The milliseconds (medians) of one product of [`GEMM_SHAPES`] by each route of `--gemm`.
struct GemmTimes {
    /// matrixmultiply called directly (what `gemm` used before).
    mmul: f64,
    /// Our `gemm`, packing both operands per call (as MKL's `sgemm` does).
    gemm: f64,
    /// `gemm_packed`, with `op(A)` packed once outside the timing (as `W_hh` is for a sequence).
    packed: f64,
    /// `gemm_packed_pair`, with `op(B)` packed in strips too, outside the timing (as the time
    /// loops keep `h` and `dA`, and read them in place).
    pair: f64,
    /// `PackedLhs::pack` of `op(A)`.
    pack: f64,
    /// The bf16 kernel, on a CPU with AVX512_BF16.
    bf16: Option<f64>,
}

/// Times the product `(m, k, n, ta, tb)` of [`GEMM_SHAPES`] (`C = op(A)·op(B) + C`, f32) by
/// every route (without matrixmultiply and bf16 when `all` is false), in this sitting. Every
/// matrix is column-major, as torch_ref.py's `--gemm` lays out its tensors.
fn gemm_times(rng: &mut Rng, (m, k, n, ta, tb): (usize, usize, usize, bool, bool), all: bool) -> GemmTimes {
    let mut rand = |r: usize, c: usize| Mat::<f32>::from_fn(r, c, |_, _| rng.uniform(-1.0, 1.0) as f32);
    let (a, b) = (if ta { rand(k, m) } else { rand(m, k) }, if tb { rand(n, k) } else { rand(k, n) });
    let mut c = Mat::<f32>::zeros(m, n);
    let t = |x: bool| if x { Trans::Yes } else { Trans::No };
    // Strides of op(A) and op(B) for matrixmultiply (column-major storage).
    let (rsa, csa) = if ta { (k as isize, 1) } else { (1, m as isize) };
    let (rsb, csb) = if tb { (n as isize, 1) } else { (1, k as isize) };
    let mmul = if all {
        median_ms(|| {
            // SAFETY: the pointers and strides describe `a`, `b` and `c`; `c` is separate.
            unsafe {
                <f32 as Scalar>::gemm_raw(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    1.0,
                    c.as_mut_ptr(),
                    1,
                    m as isize,
                )
            }
        })
    } else {
        f64::NAN
    };
    let gemm = median_ms(|| gemm(1.0, &a, t(ta), &b, t(tb), 1.0, &mut c));
    let mut packed = PackedLhs::new();
    let pack = median_ms(|| packed.pack(&a, t(ta)));
    let packed_ms = median_ms(|| gemm_packed(1.0, &packed, &b, t(tb), 1.0, &mut c));
    let mut packed_b = PackedLhs::new();
    packed_b.pack(&b, t(tb));
    let pair = median_ms(|| gemm_packed_pair(1.0, &packed, &packed_b, 0, 1.0, &mut c));
    let bf16 = (all && rnn::tensor::bf16::available()).then(|| {
        let op_a = if ta { a.transpose() } else { a.clone() };
        let op_b = if tb { b.transpose() } else { b.clone() };
        let mut packed = PackedBf16::default();
        packed.pack(op_a.as_slice(), m, k, m, |r| r);
        let mut pairs = Bf16Pairs::default();
        median_ms(|| {
            pairs.set(op_b.as_slice(), k, n);
            packed.gemm(1.0, &pairs, 1.0, c.as_mut_slice(), false);
        })
    });
    GemmTimes { mmul, gemm, packed: packed_ms, pair, pack, bf16 }
}

/// GFLOP/s of each product of [`GEMM_SHAPES`] by every route of [`gemm_times`], timed in the
/// same sitting; then the time `PackedLhs::pack` takes; and, on a CPU with AVX512_BF16, the bf16
/// kernel (`rnn_tensor::packed::bf16`: `op(A)` rounded and packed once outside the timing, `op(B)`
/// rounded to bf16 pairs inside it, as a step does).
fn run_gemm() {
    let mut rng = Rng::seed_from(1);
    let bf16 = rnn::tensor::bf16::available();
    println!(
        "{:44} {:>17} {:>8} {:>8} {:>8} {:>8} {:>9}{}",
        "product (GFLOP/s)",
        "m x k x n",
        "mmul",
        "gemm",
        "packed",
        "pair",
        "pack ms",
        if bf16 { "     bf16  bf16/packed" } else { "" }
    );
    for &(label, m, k, n, ta, tb) in &GEMM_SHAPES {
        let ts = gemm_times(&mut rng, (m, k, n, ta, tb), true);
        let g = |ms: f64| gemm_flops(m, k, n) / ms / 1e6;
        let bf16_col = ts.bf16.map_or(String::new(), |ms| format!(" {:8.1} {:12.2}", g(ms), ts.packed / ms));
        println!(
            "{label:44} {m:5} x{k:5} x{n:5} {:8.1} {:8.1} {:8.1} {:8.1} {:9.4}{bf16_col}",
            g(ts.mmul),
            g(ts.gemm),
            g(ts.packed),
            g(ts.pair),
            ts.pack
        );
    }
}

/// The name torch_ref.py's `--gemm` gives a product, and the shape argument it takes:
/// `MxKxN:AB`, A and B each `n` or `t` (transposed).
fn torch_gemm_shape((m, k, n, ta, tb): (usize, usize, usize, bool, bool)) -> String {
    let t = |x: bool| if x { 't' } else { 'n' };
    format!("{m}x{k}x{n}:{}{}", t(ta), t(tb))
}

/// `--gemm --compare ROUNDS`: each round times every product of [`GEMM_SHAPES`] by our `gemm`,
/// `gemm_packed` and `gemm_packed_pair` in this process, then by MKL (`tools/torch_ref.py
/// THREADS --gemm`, PyTorch's `addmm_`) in a child; prints per product MKL's median GFLOP/s and
/// the median over the rounds of our throughput over MKL's (its time over ours), with the range.
fn compare_gemm(rounds: usize, threads: usize, cap: Option<Level>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/torch_ref.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let shapes: Vec<_> = GEMM_SHAPES.iter().map(|&(_, m, k, n, ta, tb)| (m, k, n, ta, tb)).collect();
    // Per product: MKL's GFLOP/s, gemm / MKL, packed / MKL and pair / MKL, one per round.
    let mut rows: Vec<[Vec<f64>; 4]> = shapes.iter().map(|_| Default::default()).collect();
    let mut rng = Rng::seed_from(1);
    for round in 1..=rounds {
        let ours: Vec<GemmTimes> = shapes.iter().map(|&s| gemm_times(&mut rng, s, false)).collect();
        let mut torch = std::process::Command::new(&python);
        torch
            .arg(script)
            .arg(threads.to_string())
            .arg("--gemm")
            .args(shapes.iter().map(|&s| torch_gemm_shape(s)));
        restrict_torch(&mut torch, cap);
        let torch = run_child(torch, &format!("{python} {script} --gemm (needs torch: pip install torch)"));
        for ((row, &s), o) in rows.iter_mut().zip(&shapes).zip(&ours) {
            let name = format!("mm_{}", torch_gemm_shape(s).replace(':', "_"));
            let Some(&mkl) = torch.get(&name) else {
                eprintln!("{script} --gemm printed no time for {name}");
                std::process::exit(1)
            };
            row[0].push(gemm_flops(s.0, s.1, s.2) / mkl / 1e6);
            row[1].push(mkl / o.gemm);
            row[2].push(mkl / o.packed);
            row[3].push(mkl / o.pair);
        }
        eprintln!("round {round} of {rounds} done");
    }
    println!("| product | m × k × n | MKL GFLOP/s | gemm / MKL | range | packed / MKL | range | pair / MKL | range |");
    println!("|---|---|---:|---:|---|---:|---|---:|---|");
    for (&(label, m, k, n, ta, tb), ratios) in GEMM_SHAPES.iter().zip(rows) {
        let t = |x: bool| if x { "ᵀ" } else { "" };
        let [(mk, _, _), routes @ ..] = ratios.map(median_range);
        let routes: String =
            routes.iter().map(|(med, lo, hi)| format!(" {med:.2} | {lo:.2}-{hi:.2} |")).collect();
        println!("| {label} | {m} × {k} × {n} (A{}·B{}) | {mk:.1} |{routes}", t(ta), t(tb));
    }
}

/// `NAME MEDIAN_MS` lines of a file, by name.
fn read_times(path: &str) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines().filter_map(name_and_ms).collect()
}

/// The case name and median milliseconds of a `NAME MEDIAN_MS ...` line.
fn name_and_ms(line: &str) -> Option<(String, f64)> {
    let mut w = line.split_whitespace();
    Some((w.next()?.to_string(), w.next()?.parse().ok()?))
}

/// The extra fields of our lines (after `#`), by name.
fn read_notes(path: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines()
        .filter_map(|l| {
            let (head, note) = l.split_once('#')?;
            Some((head.split_whitespace().next()?.to_string(), note.trim().to_string()))
        })
        .collect()
}

fn print_table(files: &[String]) {
    let [o1, t1, o2, t2] = files else {
        eprintln!("--table needs four files: OURS1 TORCH1 OURS2 TORCH2");
        std::process::exit(2);
    };
    let (o1m, t1m, o2m, t2m) = (read_times(o1), read_times(t1), read_times(o2), read_times(t2));
    let notes = read_notes(o1);
    println!("| case | ours, 1 thread (ms) | PyTorch, 1 thread (ms) | speed-up | ours, 2 threads (ms) | PyTorch, 2 threads (ms) | speed-up | ours: GFLOP/s (1 thread), peak memory |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let cell = |m: &HashMap<String, f64>, n: &str| m.get(n).map_or("–".to_string(), |v| format!("{v:.2}"));
    let ratio = |a: &HashMap<String, f64>, b: &HashMap<String, f64>, n: &str| match (
        a.get(n),
        b.get(torch_cases::torch_twin(n)),
    ) {
        (Some(x), Some(y)) => format!("{:.2}×", y / x),
        _ => "–".to_string(),
    };
    for name in torch_cases::names_here() {
        let note = notes.get(name).map(|s| s.split(", ").take(2).collect::<Vec<_>>().join(", "));
        println!(
            "| `{name}` | {} | {} | {} | {} | {} | {} | {} |",
            cell(&o1m, name),
            cell(&t1m, name),
            ratio(&o1m, &t1m, name),
            cell(&o2m, name),
            cell(&t2m, name),
            ratio(&o2m, &t2m, name),
            note.unwrap_or_default()
        );
    }
}

/// From the output of `--products`: case → the share of its median run that its products took
/// (their `products: MS ms a run` over the time on the case's own line).
fn parse_products(out: &[u8]) -> HashMap<String, f64> {
    let mut case: Option<(String, f64)> = None;
    let mut shares = HashMap::new();
    for line in String::from_utf8_lossy(out).lines() {
        match line.strip_prefix("#   products: ") {
            Some(rest) => {
                let ms = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok());
                if let (Some((name, median)), Some(ms)) = (case.take(), ms) {
                    shares.insert(name, ms / median);
                }
            }
            None if !line.starts_with('#') => case = name_and_ms(line),
            None => {}
        }
    }
    shares
}

/// `NAME MEDIAN_MS` lines of a child's standard output.
fn parse_times(out: &[u8]) -> HashMap<String, f64> {
    String::from_utf8_lossy(out).lines().filter(|l| !l.starts_with('#')).filter_map(name_and_ms).collect()
}

/// Runs `cmd` and returns its times, or exits with a one-line error naming it.
fn run_child(cmd: std::process::Command, what: &str) -> HashMap<String, f64> {
    run_child_with(cmd, what, parse_times)
}

/// Runs `cmd` and returns what `parse` reads from its output, or exits with a one-line error
/// naming it.
fn run_child_with(
    mut cmd: std::process::Command,
    what: &str,
    parse: fn(&[u8]) -> HashMap<String, f64>,
) -> HashMap<String, f64> {
    match cmd.output() {
        Ok(o) if o.status.success() => parse(&o.stdout),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!("{what} failed: {}", err.lines().last().unwrap_or("no message"));
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("cannot run {what}: {e}");
            std::process::exit(1)
        }
    }
}

/// The variable-length case and its padded counterpart (every sample 100 steps).
const VARLEN: &str = "seq_lstm_varlen_fwdbwd_i256_h256_b64_t100";
const PADDED: &str = "seq_lstm_fwdbwd_i256_h256_b64_t100";

/// The share of the padded case's steps that the variable-length case runs (3,524 of 6,400).
fn real_share() -> f64 {
    let lengths = torch_cases::varlen_lengths();
    lengths.iter().sum::<usize>() as f64 / (lengths.len() * torch_cases::VARLEN_STEPS) as f64
}

/// The median of `v` (the mean of the middle two for an even count), its least and its greatest.
fn median_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (med, v[0], v[n - 1])
}

/// Restricts PyTorch as `cap` restricts ours: its own kernels (ATen), MKL's, and oneDNN's, which
/// runs its LSTM and GRU layers and reads neither of the others' variables.
fn restrict_torch(torch: &mut std::process::Command, cap: Option<Level>) {
    let isa = match cap {
        Some(Level::Avx2) => Some(("avx2", "AVX2", "AVX2")),
        Some(Level::Baseline) => Some(("default", "SSE4_2", "SSE41")),
        _ => None,
    };
    if let Some((aten, mkl, onednn)) = isa {
        torch
            .env("ATEN_CPU_CAPABILITY", aten)
            .env("MKL_ENABLE_INSTRUCTIONS", mkl)
            .env("ONEDNN_MAX_CPU_ISA", onednn);
    }
}

/// `--compare ROUNDS`: interleaved rounds of ours and PyTorch's (see the module docs).
fn compare(rounds: usize, names: &[String], cap: Option<Level>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("cannot find this program's path: {e}");
        std::process::exit(1)
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/torch_ref.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    // times[(threads, case)] = (PyTorch's, ours) in ms, one pair per round (for a bf16 case,
    // PyTorch's f32 twin's); in `autocast` PyTorch's own bf16 (torch.autocast) on the case over
    // ours.
    let mut times: HashMap<(usize, String), Vec<(f64, f64)>> = HashMap::new();
    let mut autocast: HashMap<(usize, String), Vec<f64>> = HashMap::new();
    // PyTorch's one-thread time over our products' time in the case, one per round.
    let mut products_only: HashMap<String, Vec<f64>> = HashMap::new();
    // varlen[threads] = (ours, PyTorch's) variable-length time over the padded one's scaled by
    // the share of real steps, one per round.
    let mut varlen: HashMap<usize, Vec<(f64, f64)>> = HashMap::new();
    // The core's FMA peak (GFLOP/s), measured at the start of each round under the cap.
    if let Some(cap) = cap {
        simd::set_max_level(cap);
    }
    // No case named: every case this CPU runs under the cap, named to both sides, so that
    // PyTorch is not asked for the bf16 cases where ours do not run (below AVX-512, where
    // oneDNN may have no bf16 LSTM either: on a Zen 4 under `ONEDNN_MAX_CPU_ISA=AVX2` it fails).
    let here: Vec<String>;
    let names = if names.is_empty() {
        here = torch_cases::names_here().iter().map(|n| n.to_string()).collect();
        &here[..]
    } else {
        names
    };
    let mut peaks = Vec::new();
    for round in 1..=rounds {
        peaks.extend(simd::fma_peak_gflops(0.3));
        for threads in [1usize, 2] {
            let mut ours = std::process::Command::new(&exe);
            ours.arg("--threads").arg(threads.to_string()).args(names);
            if let Some(cap) = cap {
                ours.arg("--max-simd").arg(cap.name());
            }
            let ours = run_child(ours, "bench_table");
            // With one thread, the time of our products inside each case (a run of its own, so
            // that the timers do not touch the times above).
            let products = if threads == 1 {
                let mut timed = std::process::Command::new(&exe);
                timed.args(["--threads", "1", "--products"]).args(names);
                if let Some(cap) = cap {
                    timed.arg("--max-simd").arg(cap.name());
                }
                run_child_with(timed, "bench_table --products", parse_products)
            } else {
                HashMap::new()
            };
            let mut torch = std::process::Command::new(&python);
            // A bf16 case runs on PyTorch's side as its f32 twin and as itself (autocast).
            let mut twins: Vec<&str> =
                names.iter().flat_map(|n| [torch_cases::torch_twin(n), n.as_str()]).collect();
            twins.dedup();
            torch.arg(script).arg(threads.to_string()).args(twins);
            restrict_torch(&mut torch, cap);
            let torch = run_child(torch, &format!("{python} {script} (needs torch: pip install torch)"));
            // A bf16 case against PyTorch's f32 twin.
            for (name, o) in &ours {
                if let Some(t) = torch.get(torch_cases::torch_twin(name)) {
                    times.entry((threads, name.clone())).or_default().push((*t, *o));
                    // Our products' share of the case's time (from the timed run) applied to the
                    // time above. Not where they are under half of it: the batch-1 and streamed
                    // cases, whose GEMVs the timers do not see.
                    match products.get(name) {
                        Some(&share) if share >= 0.5 && torch_cases::torch_twin(name) == name => {
                            products_only.entry(name.clone()).or_default().push(t / (o * share.min(1.0)))
                        }
                        _ => {}
                    }
                }
                if let (Some(t), true) = (torch.get(name), torch_cases::torch_twin(name) != name) {
                    autocast.entry((threads, name.clone())).or_default().push(t / o);
                }
            }
            let over_padded =
                |times: &HashMap<String, f64>| Some(times.get(VARLEN)? / (times.get(PADDED)? * real_share()));
            if let (Some(o), Some(t)) = (over_padded(&ours), over_padded(&torch)) {
                varlen.entry(threads).or_default().push((o, t));
            }
        }
        eprintln!("round {round} of {rounds} done");
    }
    if !varlen.is_empty() {
        println!(
            "Variable lengths against the padded run scaled by the share of real steps ({:.3}):",
            real_share()
        );
        println!("| threads | ours: varlen / scaled padded, median | range | PyTorch's, median | range |");
        println!("|---:|---:|---|---:|---|");
        for threads in [1usize, 2] {
            if let Some(v) = varlen.get(&threads) {
                let (ours, torch): (Vec<f64>, Vec<f64>) = v.iter().copied().unzip();
                let ((om, o0, o1), (tm, t0, t1)) = (median_range(ours), median_range(torch));
                println!("| {threads} | {om:.3} | {o0:.3}-{o1:.3} | {tm:.3} | {t0:.3}-{t1:.3} |");
            }
        }
        println!();
    }
    if !autocast.is_empty() {
        println!("The bf16 cases against PyTorch's own bf16 (torch.autocast on the same case):");
        println!("| case | threads | PyTorch bf16 / ours, median | range | rounds |");
        println!("|---|---:|---:|---|---:|");
        for threads in [1usize, 2] {
            for name in torch_cases::BF16_NAMES {
                if let Some(v) = autocast.remove(&(threads, name.to_string())) {
                    let n = v.len();
                    let (med, lo, hi) = median_range(v);
                    println!("| `{name}` | {threads} | {med:.2}× | {lo:.2}-{hi:.2} | {n} |");
                }
            }
        }
        println!();
    }
    // The bound: PyTorch's time over the time of the case's matrix products at the FMA peak
    // (times the threads), with nothing else to do: the ratio no kernel could pass.
    let rounds_measured = peaks.len();
    let peak = (!peaks.is_empty()).then(|| median_range(peaks));
    if let Some((med, lo, hi)) = peak {
        println!(
            "FMA peak of one core: {med:.1} GFLOP/s (range {lo:.1}-{hi:.1} over {rounds_measured} rounds); \
             \"at peak\": PyTorch's time over the case's matrix-product flops at that peak times the threads; \
             \"products only\" (one thread): PyTorch's time over our products' time in the case"
        );
        println!();
    }
    // Each f32 case's product flops, from building it once (not once per thread count).
    let flops: HashMap<&str, f64> = torch_cases::names_here()
        .iter()
        .filter(|&&name| torch_cases::torch_twin(name) == name && times.keys().any(|(_, n)| n == name))
        .map(|&name| (name, torch_cases::build(name).expect("every listed case builds").flops))
        .collect();
    println!(
        "| case | threads | PyTorch / ours, median | range | rounds | at peak | products only | PyTorch, ms | ours, ms |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for threads in [1usize, 2] {
        for name in torch_cases::names_here() {
            if let Some(v) = times.remove(&(threads, name.to_string())) {
                let n = v.len();
                let (med, lo, hi) = median_range(v.iter().map(|(t, o)| t / o).collect());
                // The medians of each side's times, from which a bound in milliseconds can be
                // drawn; never compared across sittings.
                let (torch, ours): (Vec<f64>, Vec<f64>) = v.into_iter().unzip();
                let (torch_ms, our_ms) = (median_range(torch).0, median_range(ours).0);
                // (Not for a bf16 case, which has no entry in `flops`: its products are not
                // bounded by the f32 peak.)
                let bound = match (peak, flops.get(name)) {
                    (Some((p, _, _)), Some(&flops)) => {
                        let at_peak_ms = flops / (p * 1e9 * threads as f64) * 1e3;
                        format!("{:.2}×", torch_ms / at_peak_ms)
                    }
                    _ => "–".to_string(),
                };
                let products = match products_only.remove(name).filter(|_| threads == 1) {
                    Some(v) => format!("{:.2}×", median_range(v).0),
                    None => "–".to_string(),
                };
                println!(
                    "| `{name}` | {threads} | {med:.2}× | {lo:.2}-{hi:.2} | {n} | {bound} | {products} | {torch_ms:.3} | {our_ms:.3} |"
                );
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 1usize;
    let (mut gemm_mode, mut names, mut table, mut compare_rounds) = (false, Vec::new(), None, None);
    let mut max_simd: Option<Level> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => {
                threads =
                    it.next().and_then(|v| v.parse().ok()).filter(|t| (1..=2).contains(t)).unwrap_or_else(
                        || {
                            eprintln!("--threads takes 1 or 2");
                            std::process::exit(2)
                        },
                    )
            }
            "--gemm" => gemm_mode = true,
            "--max-simd" => {
                let v = it.next().unwrap_or_default();
                max_simd = Some(Level::parse(&v).unwrap_or_else(|e| {
                    eprintln!("--max-simd {e}");
                    std::process::exit(2)
                }));
            }
            "--cpu-time" => CPU_TIME.store(1, Relaxed),
            "--digest" => DIGEST.store(1, Relaxed),
            "--products" => PRODUCTS.store(1, Relaxed),
            "--table" => table = Some(it.by_ref().collect::<Vec<_>>()),
            "--compare" => {
                compare_rounds =
                    Some(it.next().and_then(|v| v.parse::<usize>().ok()).filter(|r| *r >= 1).unwrap_or_else(
                        || {
                            eprintln!("--compare takes a number of rounds, 1 or more (5 for a table)");
                            std::process::exit(2)
                        },
                    ))
            }
            "--help" | "-h" => {
                println!(
                    "bench_table [--threads 1|2] [--max-simd avx2|avx512|portable] [--cpu-time] [--digest] [--products] [--gemm] [CASE ...] | --table OURS1 TORCH1 OURS2 TORCH2 | --compare ROUNDS [--max-simd LEVEL] [CASE ...] | --gemm --compare ROUNDS [--threads N] [--max-simd LEVEL]"
                );
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!("unknown flag {a}; see --help");
                std::process::exit(2)
            }
            _ => names.push(a),
        }
    }
    if let Some(files) = table {
        print_table(&files);
        return;
    }
    if let Some(bad) = names.iter().find(|n| !torch_cases::names_here().contains(&n.as_str())) {
        let bf16 = torch_cases::BF16_NAMES.contains(&bad.as_str());
        if bf16 {
            eprintln!(
                "case {bad} needs a CPU with AVX512_BF16 (and no SIMD cap below avx512); this one has not"
            );
        } else {
            eprintln!("unknown case {bad}; the cases are {:?}", torch_cases::names_here());
        }
        std::process::exit(2);
    }
    // The flag, else RNN_MAX_SIMD (checked here: the library ignores a bad value).
    let max_simd = max_simd.or(simd::check_simd_env().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    }));
    if let Some(rounds) = compare_rounds {
        if gemm_mode {
            if let Some(level) = max_simd {
                simd::set_max_level(level);
            }
            parallel::set_num_threads(threads);
            compare_gemm(rounds, threads, max_simd);
        } else {
            compare(rounds, &names, max_simd);
        }
        return;
    }
    if let Some(level) = max_simd {
        simd::set_max_level(level);
    }
    let blocking = match rnn::tensor::packed::gemm_blocking() {
        Some((strips, cols)) => format!("blocks of {strips} strips of A, {cols} columns of B"),
        None => "the portable route".to_string(),
    };
    eprintln!(
        "kernels: {:?} (gate loops {:?}); L2 {} KB per core: {blocking}",
        simd::gemm_level(),
        simd::level(),
        rnn::tensor::cache::l2_bytes() / 1024
    );
    // No other thread exists yet; matrixmultiply reads the variable at its first product.
    // An explicit MATMUL_NUM_THREADS in the environment is kept (to compare splits).
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    }
    // The library's own threads: f32 products on AVX-512 CPUs and the time loops.
    parallel::set_num_threads(threads);
    if gemm_mode {
        run_gemm();
    } else {
        run_cases(&names);
    }
}
