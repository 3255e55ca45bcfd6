//! The bf16 product on AMX tiles (Intel AMX-BF16: `tdpbf16ps`), for CPUs that have it.
//!
//! **The instruction.** `tdpbf16ps C, A, B` takes an `f32` tile `C` (16 rows of 16 values), a
//! bf16 tile `A` (16 rows of 16 pairs) and a bf16 tile `B` (16 rows of pairs, each row 16 pairs)
//! and adds to `C[i][j]` the 32 products `A[i][2q + h]·B[q][2j + h]`. One issues every 16 cycles
//! or so and does 8,192 multiply-adds: measured on the 2-core Xeon (family 6, model 167) at 5.7
//! ns each, 2.9 TFLOP/s per core, fourteen times the AVX-512 FMA peak.
//!
//! **The layout, as the other kernels have it.** The packed strips of [`PackedBf16`]
//! (`super::PackedBf16`) hold, for pair `q`, rows 0-15 then rows 16-31 of the strip, each row's
//! two values together: 64 bytes per half, so the rows `q0..q0 + 16` of a `B` tile are 64-byte
//! runs 128 bytes apart, read in place. [`Bf16Pairs`] holds each column of `X` as its pairs, one
//! `u32` each: 16 columns are an `A` tile, rows `kp·4` bytes apart. So a tile product computes
//! `Yᵀ` for 16 columns × 16 rows of a half strip, `C[j][r] = Σ_q X[:, j]·A[r, :]`, and `C`'s rows
//! are 16 consecutive values of a column of `Y`.
//!
//! **Arithmetic.** Each element of `Y` gets its own accumulator, started at zero, and takes the
//! pairs in blocks of 16 (the last block the `kp mod 16` left), in order, one `tdpbf16ps` per
//! block; then `y ← fma(alpha, acc, beta·y)` as in the other kernels. Within an instruction the
//! hardware sums the 32 products its own way (not the sequential `f32` order of `vdpbf16ps`:
//! checked on 51,200 sums, it matches neither order nor one rounding of the exact sum), so the
//! AMX kernel's bits are its own, not the portable definition's; its error stays within the
//! bound of `f32` summation (tested). What keeps the bits fixed for any split is that an
//! element's blocks and their order depend only on `k`: not on the columns multiplied with it
//! (`X` is padded with zero columns to a multiple of 16, and a product of fewer than 16 columns
//! configures its tiles with that many rows: both tested), not on its row's place in the
//! packing, and not on the order of the strips.
//!
//! **Permission.** Linux gives a process the AMX tile state only after
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; [`available`] asks once and uses AMX
//! only if granted (and the CPU reports AMX-TILE and AMX-BF16, and the SIMD cap allows AVX-512).

use std::arch::asm;
use std::arch::x86_64::*;

use super::{Bf16Pairs, MR};

/// Pairs per `tdpbf16ps` (64 bytes of a tile row).
const KB: usize = 16;
/// Columns of `X` per tile (tile rows).
const NJ: usize = 16;

/// Whether the AMX kernel runs here (see the module docs): the CPU and the OS are asked once
/// per process, the SIMD cap ([`crate::bf16::available`]) every time.
pub(super) fn available() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::bf16::available() && *AMX.get_or_init(|| cpu_has_amx_bf16() && request_permission())
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24).
fn cpu_has_amx_bf16() -> bool {
    let r = __cpuid_count(7, 0);
    r.edx & (1 << 22) != 0 && r.edx & (1 << 24) != 0
}

/// Asks Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023,
/// XFEATURE_XTILEDATA = 18)`); true if granted.
#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    let ret: i64;
    // SAFETY: the arch_prctl system call (158 on x86-64) with a request that only changes this
    // process's permitted extended state; it reads no memory of ours. `syscall` clobbers rcx
    // and r11, declared.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 158i64 => ret,
            in("rdi") 0x1023i64,
            in("rsi") 18i64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

/// A tile configuration (palette 1), the 64-byte block `ldtilecfg` reads.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// The tiles: `C` halves in tmm0-1; `A` (`nr` columns × 16 pairs) in tmm2, its tail (`kt`
/// pairs) in tmm3; the `B` halves (16 pairs × 16 rows) in tmm4-5, their tails (`kt` pairs) in
/// tmm6-7. `C` and `A` have `nr` rows: 16, or fewer for a product of fewer columns (a GEMV
/// moves one row of `A` and `C` instead of 16).
fn config(kt: usize, nr: usize) -> TileConfig {
    let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    for t in [0, 1, 2] {
        (c.colsb[t], c.rows[t]) = (64, nr as u8);
    }
    for t in [4, 5] {
        (c.colsb[t], c.rows[t]) = (64, 16);
    }
    if kt > 0 {
        (c.colsb[3], c.rows[3]) = (4 * kt as u16, nr as u8);
        for t in [6, 7] {
            (c.colsb[t], c.rows[t]) = (64, kt as u8);
        }
    }
    c
}

/// One block of pairs from `q0` on: the `A` tile `$a` from `X`'s columns (`$xa`, `$lda` bytes
/// apart), the `B` halves `$b0`, `$b1` from the strip (rows 128 bytes apart), and their products
/// added to `C`'s halves in tmm0 and tmm1. The full blocks and the tail use the same code with
/// their own tiles (configured with their own widths).
macro_rules! tile_step {
    ($a:literal, $b0:literal, $b1:literal, $xa:expr, $lda:expr, $strip:expr, $q0:expr) => {
        asm!(
            concat!("tileloadd ", $a, ", [{xa} + {lda}*1]"),
            concat!("tileloadd ", $b0, ", [{b0} + {ldb}*1]"),
            concat!("tileloadd ", $b1, ", [{b1} + {ldb}*1]"),
            concat!("tdpbf16ps tmm0, ", $a, ", ", $b0),
            concat!("tdpbf16ps tmm1, ", $a, ", ", $b1),
            xa = in(reg) $xa.add($q0),
            lda = in(reg) $lda,
            b0 = in(reg) $strip.add($q0 * 2 * MR),
            b1 = in(reg) $strip.add($q0 * 2 * MR + MR),
            ldb = in(reg) 4 * MR,
            options(nostack, readonly)
        )
    };
}

/// See [`super::PackedBf16::gemm`].
///
/// # Safety
/// [`available`] returned true; `a` holds `⌈m/MR⌉` strips of `2·MR·kp` values; `x` has `kp`
/// pairs per column and its data is padded with zero columns to a multiple of 16
/// ([`Bf16Pairs::set`]); `y` holds `m × x.n` values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm(
    m: usize,
    kp: usize,
    a: &[u16],
    alpha: f32,
    x: &Bf16Pairs,
    beta: f32,
    y: &mut [f32],
    reverse: bool,
) {
    let n = x.n;
    let strips = m.div_ceil(MR);
    debug_assert!(a.len() >= strips * 2 * MR * kp && x.data.len() >= n.div_ceil(NJ) * NJ * kp);
    debug_assert!(y.len() >= m * n);
    let (full, kt) = (kp / KB, kp % KB);
    let cfg = config(kt, n.min(NJ));
    // The sums of one tile product: C's two halves, 16 columns × 16 rows each.
    let mut c = [[0.0f32; NJ * 16]; 2];
    // SAFETY: `available` granted the tile state; the configuration is a valid palette-1 block.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly)) };
    let lda = 4 * kp; // bytes between columns of X
    for i in 0..strips {
        let s = if reverse { strips - 1 - i } else { i };
        let strip = a[s * 2 * MR * kp..].as_ptr();
        let rows = MR.min(m - s * MR);
        for j0 in (0..n).step_by(NJ) {
            let xa = x.data[j0 * kp..].as_ptr();
            // SAFETY: tiles configured above. The A loads read min(n, 16) rows of 64 bytes
            // (`4·kt` in the tail) from columns j0.. of X, pairs q0.., inside `x.data` (padded
            // to whole tiles of columns); the B loads read rows q0..q0+16 (`kt` in the tail) of
            // the strip, 64 bytes each, 128 bytes apart, inside the strip. The stores write at
            // most the 1 KB of `c[0]` and of `c[1]`.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
                for kb in 0..full {
                    tile_step!("tmm2", "tmm4", "tmm5", xa, lda, strip, kb * KB);
                }
                if kt > 0 {
                    tile_step!("tmm3", "tmm6", "tmm7", xa, lda, strip, full * KB);
                }
                asm!(
                    "tilestored [{c0} + {ldc}*1], tmm0",
                    "tilestored [{c1} + {ldc}*1], tmm1",
                    c0 = in(reg) c[0].as_mut_ptr(),
                    c1 = in(reg) c[1].as_mut_ptr(),
                    ldc = in(reg) 64usize,
                    options(nostack)
                );
            }
            // y ← fma(alpha, acc, beta·y) for the valid columns and rows.
            for j in 0..NJ.min(n - j0) {
                let col = (j0 + j) * m + s * MR;
                for (h, ch) in c.iter().enumerate() {
                    let r0 = 16 * h;
                    if r0 >= rows {
                        break;
                    }
                    let mask = ((1u32 << (rows - r0).min(16)) - 1) as __mmask16;
                    // SAFETY: AVX-512F (this function's feature); the masked lanes are rows
                    // r0..rows of column j0 + j of y (inside its m × n values) and row j of
                    // the half's sums.
                    unsafe {
                        let acc = _mm512_loadu_ps(ch[j * 16..].as_ptr());
                        let yp = y.as_mut_ptr().add(col + r0);
                        let prev = if beta == 0.0 {
                            _mm512_setzero_ps()
                        } else {
                            _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, yp))
                        };
                        _mm512_mask_storeu_ps(yp, mask, _mm512_fmadd_ps(_mm512_set1_ps(alpha), acc, prev));
                    }
                }
            }
        }
    }
    // SAFETY: gives the tile state back (the tiles' contents are dead).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
