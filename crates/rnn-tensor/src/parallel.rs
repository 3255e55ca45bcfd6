//! The library's own threads: a fixed number of workers that split one piece of work into
//! contiguous parts (batch columns, weight rows), each part computed exactly as it would be on
//! one thread, so results are bit-identical for any thread count.
//!
//! The count is [`num_threads`]: `RNN_NUM_THREADS` if set, else the machine's available
//! parallelism; [`set_num_threads`] changes it at run time. Counts are in `1..=`[`MAX_THREADS`].
//! A program should check the environment at start-up with [`env_thread_count`] (or
//! [`check_thread_env`], which also checks `MATMUL_NUM_THREADS`) and report its error: the lazy
//! default never panics, but it can only fall back (to the cores for a value that does not
//! parse or is 0, to [`MAX_THREADS`] for a larger one).
//!
//! [`for_each_part`] runs on a persistent pool: worker threads are started on first use (more
//! when the count grows) and live for the rest of the process. Between calls a worker spins for
//! about [`SPIN`] (so a call that follows soon after the last one starts at once), then parks;
//! the caller computes part 0 itself. A call made from inside a part (a GEMM inside a split time
//! loop), or while another thread's call holds the pool, runs inline as a single part. A panic in
//! any part is caught, the other parts finish (or leave a [`Part::barrier`] that can no longer be
//! passed), and the first panic is resumed on the caller.
//!
//! [`for_each_claimed`] is for short work without barriers (a streamed step of a few µs): its
//! pieces go to whoever claims them first, so the caller never waits for a worker that has not
//! started (a parked one, or one the system has not scheduled yet).

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// The most threads a count may ask for (`RNN_NUM_THREADS`, [`set_num_threads`]).
pub const MAX_THREADS: usize = 256;

/// The environment variable of the library's thread count.
pub const THREADS_ENV: &str = "RNN_NUM_THREADS";

/// The environment variable matrixmultiply reads for its own threads (f64 products).
pub const MATMUL_THREADS_ENV: &str = "MATMUL_NUM_THREADS";

/// Parses a thread count: a decimal integer in `1..=`[`MAX_THREADS`] (surrounding spaces
/// allowed). The error says what is wrong and the allowed range, without naming the source.
pub fn parse_thread_count(value: &str) -> Result<usize, String> {
    let v = value.trim();
    match v.parse::<u128>() {
        Ok(n) if (1..=MAX_THREADS as u128).contains(&n) => Ok(n as usize),
        Ok(n) => Err(format!("must be in 1..={MAX_THREADS}, got {n}")),
        Err(_) => Err(format!("must be a whole number in 1..={MAX_THREADS}, got {value:?}")),
    }
}

/// The thread count set by the environment variable `var`: `Ok(None)` when it is unset or
/// empty, `Ok(Some(n))` for a valid count, and an error naming the variable otherwise (a value
/// that does not parse, 0, more than [`MAX_THREADS`], or not Unicode).
pub fn env_thread_count(var: &str) -> Result<Option<usize>, String> {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{var} is not valid Unicode; set it to a number in 1..={MAX_THREADS} or unset it"))
        }
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => parse_thread_count(&v)
            .map(Some)
            .map_err(|e| format!("{var} {e}; set it to a number in 1..={MAX_THREADS} or unset it")),
    }
}

/// Checks both thread variables, `RNN_NUM_THREADS` and `MATMUL_NUM_THREADS`, and returns the
/// library's count from the first (`None` when unset). A program calls this at start-up so that
/// a bad value is an error instead of a silent fallback (matrixmultiply itself ignores a value it
/// cannot parse and caps large ones).
pub fn check_thread_env() -> Result<Option<usize>, String> {
    let n = env_thread_count(THREADS_ENV)?;
    env_thread_count(MATMUL_THREADS_ENV)?;
    Ok(n)
}

/// The number of threads [`for_each_part`] uses, in `1..=`[`MAX_THREADS`].
///
/// Unless [`set_num_threads`] was called, the first call reads `RNN_NUM_THREADS`; a value that
/// is not a count falls back to the machine's available parallelism, and one above
/// [`MAX_THREADS`] is capped (never a panic: [`env_thread_count`] reports such values).
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let cores = || std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
            let n = match std::env::var(THREADS_ENV).ok().map(|v| v.trim().parse::<u128>()) {
                Some(Ok(n)) if n > 0 => n.min(MAX_THREADS as u128) as usize,
                _ => cores(),
            };
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the number of threads [`for_each_part`] uses (0 is taken as 1, more than
/// [`MAX_THREADS`] as [`MAX_THREADS`]).
pub fn set_num_threads(n: usize) {
    THREADS.store(n.clamp(1, MAX_THREADS), Ordering::Relaxed);
}

/// How long an idle worker spins, waiting for the next call, before it parks.
pub const SPIN: Duration = Duration::from_micros(100);

/// Waits (spinning, then yielding the core) until `done()` holds; `poisoned()` is checked
/// meanwhile and, if it holds, the wait panics instead of hanging.
#[inline]
fn wait_until(done: impl Fn() -> bool, poisoned: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if poisoned() {
            panic!("parallel: another part of this call panicked");
        }
        if spins < 2000 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// A barrier for the parts of one call: a counter and a generation, spin then yield.
struct CallBarrier {
    count: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl CallBarrier {
    fn new(count: usize) -> Self {
        CallBarrier {
            count,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
            // The last to arrive resets the count (no one can arrive again before the
            // generation moves) and releases the others.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            wait_until(
                || self.generation.load(Ordering::Acquire) != gen,
                || self.poisoned.load(Ordering::Acquire),
            );
        }
    }
}

/// One part of a [`for_each_part`] call: which part, of how many, and a barrier shared by all
/// parts of the call.
pub struct Part<'a> {
    /// This part's index, `0..count`.
    pub index: usize,
    /// The number of parts running together.
    pub count: usize,
    barrier: &'a CallBarrier,
}

impl Part<'_> {
    /// Waits until every part of the call has reached this point (spinning, then yielding).
    ///
    /// # Panics
    /// If another part of the call panicked (which the caller then sees as that part's panic).
    pub fn barrier(&self) {
        if self.count > 1 {
            self.barrier.wait();
        }
    }

    /// This part's share of `0..n`, in contiguous ranges whose starts are multiples of `align`.
    pub fn range(&self, n: usize, align: usize) -> Range<usize> {
        split_range(n, self.index, self.count, align)
    }
}

/// Part `index` of `count` contiguous ranges covering `0..n`, each start a multiple of `align`
/// (`align` ≥ 1); sizes differ by at most `align`.
pub fn split_range(n: usize, index: usize, count: usize, align: usize) -> Range<usize> {
    let align = align.max(1);
    let units = n.div_ceil(align);
    let start = (units * index / count * align).min(n);
    let end = (units * (index + 1) / count * align).min(n);
    start..end
}

/// The function of a call, its lifetime erased (the caller outlives every use, see `Call`).
type PartFn<'a> = dyn Fn(&Part<'_>) + Sync + 'a;

/// What the parts of one call share; lives on the caller's stack until every worker that takes
/// part has finished with it.
struct Call {
    f: *const PartFn<'static>,
    barrier: CallBarrier,
    /// Workers still running a part; a worker's decrement is its last access to the `Call`. (A
    /// claimed call starts it at the slots it opens and the caller takes away the slots no
    /// worker took, see [`for_each_claimed`].)
    remaining: AtomicUsize,
    /// A claimed call's next unclaimed piece.
    next: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Call {
    /// Runs part `index`, catching a panic (recorded, and the barrier poisoned).
    fn run(&self, index: usize) {
        // SAFETY: `f` points to the caller's closure, alive until the call returns, which waits
        // for every part (see `for_each_part`).
        let f = unsafe { &*self.f };
        let part = Part { index, count: self.barrier.count, barrier: &self.barrier };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&part))) {
            self.barrier.poisoned.store(true, Ordering::Release);
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(p);
            }
        }
    }

    /// Runs the pieces of a claimed call that nobody has claimed yet, one after another.
    fn run_claimed(&self) {
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.barrier.count {
                break;
            }
            self.run(index);
        }
    }
}

/// The state workers watch: `ticket = generation << 16 | CLAIMED? | count` (for a claimed call,
/// the slots still open instead of the count), and the current call.
struct Shared {
    ticket: AtomicUsize,
    call: AtomicPtr<Call>,
}

static SHARED: Shared = Shared { ticket: AtomicUsize::new(0), call: AtomicPtr::new(std::ptr::null_mut()) };

const COUNT_BITS: u32 = 16;

/// The ticket's flag of a claimed call ([`for_each_claimed`]).
const CLAIMED: usize = 1 << (COUNT_BITS - 1);

/// The ticket's count (or open slots).
const COUNT_MASK: usize = CLAIMED - 1;

/// A started worker: its thread (to unpark) and whether it is parked or about to park.
struct Worker {
    thread: Thread,
    sleeping: Arc<AtomicBool>,
}

/// The workers; whoever holds the lock owns the pool for one call.
static POOL: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

thread_local! {
    /// Whether this thread is running a part (then nested calls run inline).
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// Worker `index` (1-based: the part it runs) of the pool, having seen `ticket` already.
fn worker_loop(index: usize, seen: usize, sleeping: Arc<AtomicBool>) {
    IN_PART.with(|p| p.set(true));
    let mut seen = seen >> COUNT_BITS;
    loop {
        // Spin, then park, until the generation moves (a claimed call changes its ticket's
        // low bits within its generation).
        let start = Instant::now();
        let mut spins = 0u32;
        let ticket = loop {
            let t = SHARED.ticket.load(Ordering::Acquire);
            if t >> COUNT_BITS != seen {
                break t;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Announce the sleep, then look once more (SeqCst on both sides: a caller that
            // moves the ticket after this check sees `sleeping` and unparks us).
            sleeping.store(true, Ordering::SeqCst);
            if SHARED.ticket.load(Ordering::SeqCst) >> COUNT_BITS == seen {
                std::thread::park();
            }
            sleeping.store(false, Ordering::SeqCst);
        };
        seen = ticket >> COUNT_BITS;
        let count = ticket & COUNT_MASK;
        if ticket & CLAIMED != 0 {
            if take_slot(ticket) {
                let call = SHARED.call.load(Ordering::Acquire);
                // SAFETY: the call cannot end before its caller has closed it (taken the open
                // slots away) and seen our decrement; we took a slot while it was open, so the
                // caller counts us in and waits. The decrement is our last access.
                unsafe {
                    (*call).run_claimed();
                    (*call).remaining.fetch_sub(1, Ordering::Release);
                }
            }
        } else if index < count {
            let call = SHARED.call.load(Ordering::Acquire);
            // SAFETY: the caller published `call` before the ticket and waits for `remaining`
            // to reach zero before it lets the `Call` go; our decrement is the last access.
            unsafe {
                (*call).run(index);
                (*call).remaining.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

/// Takes one open slot of the claimed call whose ticket was `ticket`, if that call is still
/// open (same generation, a slot left); whether it did.
fn take_slot(ticket: usize) -> bool {
    let mut t = ticket;
    while t >> COUNT_BITS == ticket >> COUNT_BITS && t & COUNT_MASK > 0 {
        match SHARED.ticket.compare_exchange_weak(t, t - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => t = now,
        }
    }
    false
}

/// Runs `f` on `min(num_threads(), max_parts)` parts in parallel (part 0 on the calling
/// thread) and returns when all have finished. With one part, `f` runs on the caller alone;
/// so does a call made from inside a part or while another thread's call is running.
///
/// # Panics
/// If a part panics: the first panic is resumed on the caller once every part has stopped.
pub fn for_each_part<F: Fn(&Part<'_>) + Sync>(max_parts: usize, f: F) {
    dispatch(max_parts, false, &f);
}

/// Runs `f(piece, count)` once for each piece `0..count`, `count = min(num_threads(),
/// max_pieces)`, on whichever threads claim them first: the caller starts at once and, having
/// finished a piece, claims the next one no worker has claimed. So a worker that is parked, or
/// that the system has not scheduled yet, costs the caller nothing: it does that piece itself
/// (a worker that has begun a piece is waited for). For short work with no barrier between its
/// pieces (a streamed step), where waiting for a late worker would cost more than the piece.
/// Which thread runs a piece never changes what it computes. Inline as [`for_each_part`] is
/// (one piece, `count` 1). With more running threads than cores, a worker preempted inside its
/// piece still holds the caller for a time slice: there, one thread serves better.
///
/// # Panics
/// If a piece panics: the first panic is resumed on the caller once every piece has stopped.
pub fn for_each_claimed<F: Fn(usize, usize) + Sync>(max_pieces: usize, f: F) {
    dispatch(max_pieces, true, &|part: &Part<'_>| f(part.index, part.count));
}

/// [`for_each_part`] (`claimed` false) or [`for_each_claimed`].
fn dispatch(max_parts: usize, claimed: bool, f: &PartFn<'_>) {
    let count = num_threads().min(max_parts).clamp(1, COUNT_MASK);
    if count == 1 || IN_PART.with(|p| p.get()) {
        return run_inline(f);
    }
    let mut workers = match POOL.try_lock() {
        Ok(w) => w,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return run_inline(f),
    };
    while workers.len() + 1 < count {
        let index = workers.len() + 1;
        let seen = SHARED.ticket.load(Ordering::Acquire);
        let sleeping = Arc::new(AtomicBool::new(false));
        let s = sleeping.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rnn-worker-{index}"))
            .spawn(move || worker_loop(index, seen, s));
        match spawned {
            Ok(h) => workers.push(Worker { thread: h.thread().clone(), sleeping }),
            Err(_) => break,
        }
    }
    let count = count.min(workers.len() + 1);
    // SAFETY: only the lifetime is erased; every use of the pointer ends before we return.
    let f_ptr: *const PartFn<'static> = unsafe { std::mem::transmute::<&PartFn<'_>, &PartFn<'static>>(f) };
    let call = Call {
        f: f_ptr,
        barrier: CallBarrier::new(count),
        remaining: AtomicUsize::new(count - 1),
        next: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    SHARED.call.store(&call as *const Call as *mut Call, Ordering::Relaxed);
    let gen = (SHARED.ticket.load(Ordering::Relaxed) >> COUNT_BITS).wrapping_add(1);
    // A claimed call opens `count - 1` slots, one per worker that may join.
    let flag = if claimed { CLAIMED } else { 0 };
    let low = if claimed { count - 1 } else { count };
    SHARED.ticket.store((gen << COUNT_BITS) | flag | low, Ordering::SeqCst);
    for w in &workers[..count - 1] {
        if w.sleeping.load(Ordering::SeqCst) {
            w.thread.unpark();
        }
    }
    IN_PART.with(|p| p.set(true));
    if claimed {
        call.run_claimed();
        // Close the call: the slots no worker took are taken away (a worker that comes later
        // finds none and leaves the call alone), and nobody waits for them.
        let open = SHARED.ticket.fetch_and(!COUNT_MASK, Ordering::AcqRel) & COUNT_MASK;
        call.remaining.fetch_sub(open, Ordering::AcqRel);
    } else {
        call.run(0);
    }
    IN_PART.with(|p| p.set(false));
    // Never a hang: parts stuck at a barrier see it poisoned and stop.
    wait_until(|| call.remaining.load(Ordering::Acquire) == 0, || false);
    drop(workers);
    if let Some(p) = call.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(p);
    }
}

/// Runs `f` once on each of `pieces` (disjoint work: slices split from the same buffers, say),
/// spread over up to `pieces.len()` parts: part `i` of `c` takes pieces `i`, `i + c`, ...; so a
/// call that runs on fewer parts (inline, or with fewer threads) still does every piece.
///
/// # Panics
/// As [`for_each_part`].
pub fn for_each_piece<P: Send>(pieces: Vec<P>, f: impl Fn(P) + Sync) {
    let slots: Vec<Mutex<Option<P>>> = pieces.into_iter().map(|p| Mutex::new(Some(p))).collect();
    for_each_part(slots.len(), |part| {
        for slot in slots.iter().skip(part.index).step_by(part.count) {
            let piece = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(piece) = piece {
                f(piece);
            }
        }
    });
}

/// `f` as the single part of a call, on the calling thread.
fn run_inline(f: &PartFn<'_>) {
    let barrier = CallBarrier::new(1);
    let was = IN_PART.with(|p| p.replace(true));
    let r = catch_unwind(AssertUnwindSafe(|| f(&Part { index: 0, count: 1, barrier: &barrier })));
    IN_PART.with(|p| p.set(was));
    if let Err(p) = r {
        resume_unwind(p);
    }
}

/// The crate's tests that set the thread count or need the pool run one at a time under this
/// lock, so that each gets the pool and the count it set (a call made while another thread's
/// call holds the pool runs inline, which `many_tiny_calls..` must not see every time; a count
/// set by another test meanwhile made it run every call inline once, on a loaded machine).
#[cfg(test)]
pub(crate) fn serial_tests() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every piece is done exactly once, with one thread, with two, and with more pieces than
    /// threads (a part then takes several).
    #[test]
    fn for_each_piece_does_every_piece_once() {
        let _serial = serial_tests();
        let threads = num_threads();
        for t in [1, 2] {
            set_num_threads(t);
            for count in [1, 2, 5] {
                let mut data = vec![0u32; 10 * count];
                let pieces: Vec<(usize, &mut [u32])> = data.chunks_mut(10).enumerate().collect();
                for_each_piece(pieces, |(i, piece)| piece.iter_mut().for_each(|v| *v += i as u32 + 1));
                let want: Vec<u32> = (0..10 * count).map(|j| (j / 10) as u32 + 1).collect();
                assert_eq!(data, want, "{count} pieces, {t} threads");
            }
        }
        set_num_threads(threads);
    }

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        serial_tests()
    }

    /// Thread counts from the environment are checked like `--threads`: the error names the
    /// variable and the range; absurd values never reach the pool (which caps them anyway).
    #[test]
    fn thread_counts_are_checked() {
        assert_eq!(parse_thread_count(" 4 "), Ok(4));
        assert_eq!(parse_thread_count("256"), Ok(256));
        for bad in ["0", "257", "100000", "18446744073709551616000", "abc", "-1", "2.5", ""] {
            let e = parse_thread_count(bad).unwrap_err();
            assert!(e.contains("1..=256"), "{bad}: {e}");
        }
        // (Setting variables here would race with other tests reading the environment; the
        // program's tests in crates/charlm/tests/reliability.rs set them in child processes.)
        assert_eq!(env_thread_count("RNN_TEST_THREADS_VAR_NEVER_SET_17"), Ok(None));
    }

    #[test]
    fn set_num_threads_caps_the_count() {
        let _serial = serial();
        set_num_threads(1_000_000);
        assert_eq!(num_threads(), MAX_THREADS);
        set_num_threads(0);
        assert_eq!(num_threads(), 1);
        set_num_threads(2);
    }

    #[test]
    fn ranges_cover_and_align() {
        for n in [0usize, 1, 7, 64, 65, 1000] {
            for count in 1..4 {
                for align in [1usize, 8, 32] {
                    let mut next = 0;
                    for i in 0..count {
                        let r = split_range(n, i, count, align);
                        assert_eq!(r.start, next, "n {n} count {count} align {align}");
                        assert!(r.start.is_multiple_of(align) || r.start == n);
                        next = r.end;
                    }
                    assert_eq!(next, n);
                }
            }
        }
    }

    /// Each part writes its own range; with 3 threads every index is written exactly once, by
    /// the part that owns it, over many tiny calls (the pool's hand-off, not thread start-up).
    #[test]
    fn many_tiny_calls_cover_every_index_once() {
        let _serial = serial();
        set_num_threads(3);
        let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        let parts_seen = AtomicUsize::new(0);
        let call = || {
            for_each_part(8, |p| {
                parts_seen.fetch_max(p.count, Ordering::Relaxed);
                for i in p.range(hits.len(), 1) {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut calls = 0;
        // Tests of other modules may hold the pool (then a call runs inline), on a loaded
        // machine for the whole of 5,000 calls: go on until a call ran split (a minute at most).
        let start = std::time::Instant::now();
        while calls < 5_000
            || (parts_seen.load(Ordering::Relaxed) < 2
                && start.elapsed() < std::time::Duration::from_secs(60))
        {
            call();
            calls += 1;
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == calls));
        assert!(parts_seen.load(Ordering::Relaxed) >= 2, "no call of {calls} ran split");
    }

    /// A call from inside a part runs inline, as one part, on the same thread.
    #[test]
    fn nested_calls_run_inline() {
        let _serial = serial();
        set_num_threads(2);
        let total = AtomicU64::new(0);
        for_each_part(2, |outer| {
            let me = std::thread::current().id();
            for_each_part(2, |inner| {
                assert_eq!((inner.index, inner.count), (0, 1));
                assert_eq!(std::thread::current().id(), me);
                inner.barrier();
                total.fetch_add(1 + outer.index as u64, Ordering::Relaxed);
            });
        });
        // One inner call per outer part: 1 (+ 2 when the call was split).
        assert!(matches!(total.load(Ordering::Relaxed), 1 | 3));
    }

    /// The barrier separates phases: every part sees all writes of the phase before.
    #[test]
    fn barrier_orders_phases() {
        let _serial = serial();
        set_num_threads(2);
        for round in 0..500u64 {
            let cells: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
            let sums: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
            for_each_part(2, |p| {
                for phase in 1..=3u64 {
                    if p.index < cells.len() {
                        cells[p.index].store(round * 10 + phase, Ordering::Relaxed);
                    }
                    p.barrier();
                    let s: u64 = cells[..p.count].iter().map(|c| c.load(Ordering::Relaxed)).sum();
                    assert_eq!(s, p.count as u64 * (round * 10 + phase));
                    p.barrier();
                    sums[p.index].fetch_add(s, Ordering::Relaxed);
                }
            });
            assert!(sums[0].load(Ordering::Relaxed) > 0);
        }
    }

    fn panic_message(p: Box<dyn Any + Send>) -> String {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    /// A panic in a worker's part, in the caller's part, or while the other part waits at a
    /// barrier reaches the caller (the first panic's message), and the pool still works after.
    #[test]
    fn panics_propagate_without_hanging() {
        let _serial = serial();
        set_num_threads(2);
        for who in [0usize, 1] {
            let r = catch_unwind(|| {
                for_each_part(2, |p| {
                    if p.index == who || p.count == 1 {
                        panic!("part {} failed", p.index);
                    }
                })
            });
            assert!(panic_message(r.unwrap_err()).starts_with("part "));
            // The other part waits at a barrier the panicking one never reaches.
            let r = catch_unwind(|| {
                for_each_part(2, |p| {
                    if p.index == who || p.count == 1 {
                        panic!("before the barrier");
                    }
                    p.barrier();
                })
            });
            assert_eq!(panic_message(r.unwrap_err()), "before the barrier");
        }
        let n = AtomicUsize::new(0);
        for_each_part(2, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert!(n.load(Ordering::Relaxed) >= 1);
    }

    /// Claimed calls do every piece once, whoever runs it: back to back (the worker spinning,
    /// it takes pieces), and after pauses longer than [`SPIN`] (the workers parked: the caller
    /// takes the pieces they would have had), between ordinary calls. Until some piece ran on a
    /// worker (a minute at most, on a loaded machine).
    #[test]
    fn claimed_calls_do_every_piece_once() {
        let _serial = serial();
        set_num_threads(3);
        let caller = std::thread::current().id();
        let on_worker = AtomicBool::new(false);
        let split = AtomicBool::new(false);
        let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        let claimed = || {
            for_each_claimed(8, |piece, count| {
                assert!(piece < count);
                split.fetch_or(count > 1, Ordering::Relaxed);
                on_worker.fetch_or(std::thread::current().id() != caller, Ordering::Relaxed);
                for i in split_range(hits.len(), piece, count, 1) {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut calls = 0;
        let start = std::time::Instant::now();
        while calls < 3_000
            || (!on_worker.load(Ordering::Relaxed) && start.elapsed() < std::time::Duration::from_secs(60))
        {
            claimed();
            calls += 1;
            if calls % 500 == 0 {
                std::thread::sleep(SPIN * 3);
                claimed();
                calls += 1;
                for_each_part(3, |_| ());
            }
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == calls));
        assert!(split.load(Ordering::Relaxed), "no claimed call of {calls} had two pieces");
        assert!(on_worker.load(Ordering::Relaxed), "no piece of {calls} calls ran on a worker");
    }

    /// A panicking piece of a claimed call reaches the caller, whichever thread ran it, and the
    /// pool goes on.
    #[test]
    fn claimed_panics_propagate() {
        let _serial = serial();
        set_num_threads(2);
        for who in [0usize, 1] {
            let r = catch_unwind(|| {
                for_each_claimed(2, |piece, count| {
                    if piece == who || count == 1 {
                        panic!("piece {piece} failed");
                    }
                })
            });
            assert!(panic_message(r.unwrap_err()).starts_with("piece "));
        }
        let n = AtomicUsize::new(0);
        for_each_claimed(2, |_, count| {
            n.fetch_add(if count == 1 { 2 } else { 1 }, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    /// Calls from several threads at once: one holds the pool, the others run inline; ordinary
    /// and claimed calls mixed.
    #[test]
    fn concurrent_callers() {
        let _serial = serial();
        set_num_threads(2);
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for _ in 0..2000 {
                        let v: Vec<AtomicUsize> = (0..10).map(|_| AtomicUsize::new(0)).collect();
                        for_each_part(2, |p| {
                            for i in p.range(10, 1) {
                                v[i].fetch_add(i + t, Ordering::Relaxed);
                            }
                        });
                        // Half the callers' calls claimed: the two kinds of call interleave.
                        if t % 2 == 1 {
                            for_each_claimed(2, |piece, count| {
                                for i in split_range(10, piece, count, 1) {
                                    v[i].fetch_add(i + t, Ordering::Relaxed);
                                }
                            });
                        }
                        let times = 1 + t % 2;
                        assert!(v
                            .iter()
                            .enumerate()
                            .all(|(i, x)| x.load(Ordering::Relaxed) == times * (i + t)));
                    }
                });
            }
        });
    }
}
