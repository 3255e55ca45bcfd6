//! The CPU's caches, read at run time: the kernels choose how to prefetch from them, not from
//! constants tuned on one machine.

use std::sync::OnceLock;

/// What [`l2_bytes`] assumes when the CPU does not say: 1 MiB (AMD Zen 4/5; most Intel cores
/// since Ice Lake have 1.25 or 2 MiB).
pub const DEFAULT_L2_BYTES: usize = 1 << 20;

/// The size of one core's L2 cache in bytes, from CPUID (extended leaf `0x8000_0006`, which Intel
/// and AMD both fill: bits 31..16 of ECX in KiB); [`DEFAULT_L2_BYTES`] where it is not reported.
/// Read once.
pub fn l2_bytes() -> usize {
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| detect_l2().unwrap_or(DEFAULT_L2_BYTES))
}

/// How a batch-1 GEMV's kernel prefetches a matrix of `bytes` that it reads once per step (the
/// weights of a streaming or batch-1 step): the choice depends on the CPU's vendor and L2 size,
/// read at run time ([`gemv_prefetch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvPrefetch {
    /// No software prefetch: the hardware prefetchers follow the one contiguous stream.
    None,
    /// Each line some way ahead into every cache level (`T0`).
    Caches,
    /// Each line some way ahead non-temporally (`NTA`), so that it does not evict the rest of
    /// the working set from L2.
    NonTemporal,
}

/// The prefetch a batch-1 GEMV over a matrix of `bytes` uses on this CPU.
///
/// - On AMD, non-temporal for a matrix larger than three quarters of the L2, else into the
///   caches. Their L3 keeps the lines a non-temporal prefetch brought in (measured on a Zen 5
///   with 1 MB of L2: 37-40 µs instead of 42-47 µs per 4 MB product).
/// - Elsewhere (Intel's cores), none. There a non-temporal line is kept in neither the L2 nor the
///   L3, so every step would read the whole matrix from memory (measured on a Xeon of model 207
///   with 2 MB of L2: a 512-unit LSTM's batch-1 step took 220-320 µs that way against 142 µs). A
///   prefetch into the caches takes load slots from the loads, which costs much in a quiet moment
///   and gains a little in a busy one: on the same Xeon, one core, medians of 7 × 100 products
///   alternating direction, `k` = 512, in a quiet moment 1 MB took 9.9-10.2 µs without it against
///   14.4-14.7 µs with it, 2 MB 28.5-30.2 against 33.2-34.5 µs, 4 MB 100.8-103.8 against
///   105.2-108.0 µs; in a busy one (half an hour later, six alternating rounds) 1 MB 14.4-17.7
///   against 14.4-15.0 µs and 2 MB 35.8-45.9 against 33.7-35.7 µs. The streamed cases of
///   `bench_table` (7-15 alternating rounds, five runs of the A/B) gained 0.97-1.16× (LSTM) and
///   1.05-1.15× (GRU) without it.
pub fn gemv_prefetch(bytes: usize) -> GemvPrefetch {
    if !is_amd() {
        GemvPrefetch::None
    } else if bytes > l2_bytes() / 4 * 3 {
        GemvPrefetch::NonTemporal
    } else {
        GemvPrefetch::Caches
    }
}

/// Whether the CPU is AMD's (CPUID's vendor string), read once.
pub(crate) fn is_amd() -> bool {
    static AMD: OnceLock<bool> = OnceLock::new();
    *AMD.get_or_init(vendor_is_amd)
}

#[cfg(target_arch = "x86_64")]
fn vendor_is_amd() -> bool {
    use std::arch::x86_64::__cpuid;
    // Leaf 0: the vendor string in EBX, EDX, ECX ("AuthenticAMD").
    let r = __cpuid(0);
    [r.ebx, r.edx, r.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]
}

#[cfg(not(target_arch = "x86_64"))]
fn vendor_is_amd() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn detect_l2() -> Option<usize> {
    use std::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 CPU; leaf 0x8000_0000 gives the highest extended leaf.
    let max_ext = __cpuid(0x8000_0000).eax;
    if max_ext < 0x8000_0006 {
        return None;
    }
    let kib = (__cpuid(0x8000_0006).ecx >> 16) as usize;
    (kib > 0).then_some(kib * 1024)
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_l2() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn l2_is_a_plausible_size() {
        let l2 = super::l2_bytes();
        // From 64 KiB to 64 MiB, a multiple of 1 KiB: anything else is a misread leaf.
        assert!((64 << 10..=64 << 20).contains(&l2) && l2.is_multiple_of(1024), "L2 of {l2} bytes");
    }
}
