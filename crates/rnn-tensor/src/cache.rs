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
