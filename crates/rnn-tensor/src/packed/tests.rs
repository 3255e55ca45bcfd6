//! The strip layout, the AVX-512 kernel and `gemm`'s f32 route against an f64 reference, and
//! the bit-identity of products split by rows, by columns, transposed or across threads.

use nalgebra::{Dyn, Matrix, RawStorage};

use super::*;
use crate::simd::TestCap;
use crate::{parallel, Mat, Rng};

fn rand(rng: &mut Rng, r: usize, c: usize) -> Mat<f32> {
    Mat::from_fn(r, c, |_, _| rng.uniform(-1.0, 1.0) as f32)
}

fn op<S: RawStorage<f32, Dyn, Dyn>>(x: &Matrix<f32, Dyn, Dyn, S>, t: Trans) -> Mat<f64> {
    let x = x.map(|v| v as f64);
    if t == Trans::Yes {
        x.transpose()
    } else {
        x
    }
}

fn bits(c: &Mat<f32>) -> Vec<u32> {
    c.iter().map(|v| v.to_bits()).collect()
}

/// Which route computes the product.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    Gemm,
    Packed,
}

/// Checks `C = alpha·op(A)·op(B) + beta·C` on the route against f64, with every operand a
/// strided view inside a larger matrix (rows 2.. of A and B, the block at (1, 2) of C): each
/// element within 1e-5 of `|alpha|·Σ_p |a_ip·b_pj| + |beta·c_ij|` (the sum of the magnitudes
/// of its terms; f32 rounding of the FMA chain is about √k·6e-8 of it for random signs), and
/// nothing outside C's block written. With `beta = 0`, C starts as NaN and must not stay NaN.
#[allow(clippy::too_many_arguments)]
fn check(
    rng: &mut Rng,
    route: Route,
    m: usize,
    k: usize,
    n: usize,
    ta: Trans,
    tb: Trans,
    alpha: f32,
    beta: f32,
) {
    let (ar, ac) = if ta == Trans::No { (m, k) } else { (k, m) };
    let (br, bc) = if tb == Trans::No { (k, n) } else { (n, k) };
    let a_big = rand(rng, ar + 3, ac);
    let b_big = rand(rng, br + 2, bc);
    let (a, b) = (a_big.rows(2, ar), b_big.rows(2, br));
    let mut c_big = rand(rng, m + 3, n + 4);
    if beta == 0.0 {
        c_big.view_mut((1, 2), (m, n)).fill(f32::NAN);
    }
    let before = c_big.clone();
    match route {
        Route::Gemm => gemm(alpha, &a, ta, &b, tb, beta, &mut c_big.view_mut((1, 2), (m, n))),
        Route::Packed => {
            let mut pa = PackedLhs::new();
            pa.pack(&a, ta);
            assert_eq!(pa.shape(), (m, k));
            gemm_packed(alpha, &pa, &b, tb, beta, &mut c_big.view_mut((1, 2), (m, n)));
        }
    }
    let (a64, b64) = (op(&a, ta), op(&b, tb));
    let c0 = before.view((1, 2), (m, n)).map(|v| v as f64);
    let (al, be) = (alpha as f64, beta as f64);
    for j in 0..n {
        for i in 0..m {
            let (mut sum, mut mag) = (0.0, 0.0);
            for p in 0..k {
                sum += a64[(i, p)] * b64[(p, j)];
                mag += (a64[(i, p)] * b64[(p, j)]).abs();
            }
            let prev = if beta == 0.0 { 0.0 } else { be * c0[(i, j)] };
            let want = al * sum + prev;
            let scale = al.abs() * mag + prev.abs();
            let got = c_big[(i + 1, j + 2)] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * scale + 1e-30,
                "{route:?} {m}x{k}x{n} {ta:?} {tb:?} alpha {alpha} beta {beta}: C[{i},{j}] = {got}, want {want} (scale {scale})"
            );
        }
    }
    for j in 0..n + 4 {
        for i in 0..m + 3 {
            let inside = (1..m + 1).contains(&i) && (2..n + 2).contains(&j);
            if !inside {
                assert_eq!(
                    c_big[(i, j)].to_bits(),
                    before[(i, j)].to_bits(),
                    "{route:?}: wrote C[{i},{j}] outside the block"
                );
            }
        }
    }
}

/// Shapes with every tail: m around strips of 32, n around panels of 12 (and one column),
/// k = 1 and k across blocks of 256, n across column blocks of 264 (through `gemm_packed`),
/// m across groups of 8 strips (300 × 300 × 100, whose `A` `gemm` packs group by group), and
/// 70 × 300 × 75, whose `A` `gemm` reads in place, copying one strip at a time.
fn shapes(rng: &mut Rng) -> Vec<(usize, usize, usize)> {
    let mut v = vec![
        (1, 1, 2),
        (32, 1, 12),
        (33, 7, 13),
        (31, 300, 11),
        (64, 256, 24),
        (65, 257, 25),
        (100, 520, 1),
        (5, 40, 300),
        (300, 300, 100),
        // Read in place by `gemm` (A not transposed: even indices), strip by strip (n > 60).
        (70, 300, 75),
        (70, 300, 75),
    ];
    for _ in 0..6 {
        v.push((1 + rng.below(100), 1 + rng.below(600), 1 + rng.below(40)));
    }
    v
}

fn check_all(route: Route, seed: u64) {
    let mut rng = Rng::seed_from(seed);
    for (idx, (m, k, n)) in shapes(&mut rng).into_iter().enumerate() {
        let ta = if idx % 2 == 0 { Trans::No } else { Trans::Yes };
        let tb = if idx % 3 == 0 { Trans::Yes } else { Trans::No };
        for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (-0.7, 1.3)] {
            check(&mut rng, route, m, k, n, ta, tb, alpha, beta);
        }
    }
}

#[test]
fn packed_products_match_f64() {
    check_all(Route::Packed, 21);
}

#[test]
fn gemm_f32_products_match_f64() {
    check_all(Route::Gemm, 22);
}

/// The portable route (column-major packing, matrixmultiply), as on a CPU without AVX2, on this
/// test's thread only.
#[test]
fn portable_route_matches_f64() {
    let _cap = TestCap::set(Level::Baseline);
    let mut pa = PackedLhs::<f32>::new();
    pa.pack(&Mat::<f32>::zeros(40, 3), Trans::No);
    assert_eq!(pa.layout, Layout::ColMajor, "the portable route packs column-major");
    check_all(Route::Packed, 23);
    check_all(Route::Gemm, 24);
}

/// The AVX2 + FMA kernel (AVX-512 capped on this test's thread) against f64: every shape of
/// [`check_all`] (strip and panel tails, k across blocks, transposes, alpha and beta, beta = 0
/// over NaN), through `gemm` and `gemm_packed`; `PackedRows` is offered (the GEMV's AVX2 build).
#[test]
fn avx2_kernel_matches_f64() {
    let _cap = TestCap::set(Level::Avx2);
    if simd::gemm_level() != Level::Avx2 {
        println!("no AVX2 with FMA: nothing to test");
        return;
    }
    assert_eq!(f32_kernel::<f32>(), Some(Level::Avx2));
    assert!(PackedRows::<f32>::available(), "the strip GEMV's AVX2 build serves batch 1");
    let mut pa = PackedLhs::<f32>::new();
    pa.pack(&Mat::<f32>::zeros(40, 3), Trans::No);
    assert!(pa.is_strips(), "AVX2 packs strips");
    check_all(Route::Packed, 31);
    check_all(Route::Gemm, 32);
}

#[test]
fn f64_packed_products_are_exact_enough() {
    // f64 keeps the column-major copy and matrixmultiply: within 1e-13 of the naive product.
    let mut rng = Rng::seed_from(25);
    let a = Mat::from_fn(70, 50, |_, _| rng.uniform(-1.0, 1.0));
    let b = Mat::from_fn(70, 9, |_, _| rng.uniform(-1.0, 1.0));
    let mut pa = PackedLhs::new();
    pa.pack(&a, Trans::Yes);
    assert_eq!(pa.layout, Layout::ColMajor);
    let mut c = Mat::from_element(50, 9, f64::NAN);
    gemm_packed(2.0, &pa, &b, Trans::No, 0.0, &mut c);
    let want = a.transpose() * &b * 2.0;
    assert!((c - want).abs().max() < 1e-13);
}

/// The strip kernels' products are the same bits whether computed whole, by column halves
/// (as two threads splitting a batch do), by row halves, transposed (`Cᵀ = Bᵀ·Aᵀ`), through
/// `gemm_packed` or `gemm`, with one or two threads, and on the AVX-512 or the AVX2 kernel.
#[test]
fn split_products_are_bit_identical() {
    if f32_kernel::<f32>().is_none() {
        println!("no AVX2 or AVX-512: the portable route's splits are matrixmultiply's business");
        return;
    }
    let mut rng = Rng::seed_from(26);
    // The last two are above kernel::THREAD_MACS, so `gemm` splits them across two threads,
    // by rows and by columns.
    const { assert!(1024 * 256 * 272 > kernel::THREAD_MACS && 64 * 1100 * 1000 > kernel::THREAD_MACS) };
    for &(m, k, n, split_m, split_n) in &[
        (100, 600, 40, 40, 17),
        (65, 256, 300, 33, 150),
        (300, 300, 100, 150, 50),
        // `gemm` reads A in place: strip by strip whole (90 columns), panel by panel in halves.
        (300, 300, 90, 150, 40),
        (1024, 256, 272, 512, 32),
        (64, 1100, 1000, 40, 500),
    ] {
        let a = rand(&mut rng, m, k);
        let b = rand(&mut rng, k, n);
        let c0 = rand(&mut rng, m, n);
        let (alpha, beta) = (0.9, 1.1);
        let run = |f: &dyn Fn(&mut Mat<f32>)| {
            let mut c = c0.clone();
            f(&mut c);
            c
        };
        let mut pa = PackedLhs::new();
        pa.pack(&a, Trans::No);
        // Under each kernel, the packing above made under the CPU's best (AVX-512 here: a
        // packing may be used under another cap), and every result equal to AVX-512's whole.
        let mut first: Option<Vec<u32>> = None;
        for level in [Level::Avx512, Level::Avx2] {
            let _cap = TestCap::set(level);
            if f32_kernel::<f32>() != Some(level) {
                continue;
            }
            let whole = run(&|c| gemm_packed(alpha, &pa, &b, Trans::No, beta, c));
            let by_cols = run(&|c| {
                gemm_packed(
                    alpha,
                    &pa,
                    &b.columns(0, split_n),
                    Trans::No,
                    beta,
                    &mut c.columns_mut(0, split_n),
                );
                gemm_packed(
                    alpha,
                    &pa,
                    &b.columns(split_n, n - split_n),
                    Trans::No,
                    beta,
                    &mut c.columns_mut(split_n, n - split_n),
                );
            });
            let by_rows = run(&|c| {
                for (r0, len) in [(0, split_m), (split_m, m - split_m)] {
                    let mut ph = PackedLhs::new();
                    ph.pack(&a.rows(r0, len), Trans::No);
                    gemm_packed(alpha, &ph, &b, Trans::No, beta, &mut c.rows_mut(r0, len));
                }
            });
            let via_gemm = run(&|c| gemm(alpha, &a, Trans::No, &b, Trans::No, beta, c));
            let gemm_cols = run(&|c| {
                for (j0, len) in [(0, split_n), (split_n, n - split_n)] {
                    gemm(
                        alpha,
                        &a,
                        Trans::No,
                        &b.columns(j0, len),
                        Trans::No,
                        beta,
                        &mut c.columns_mut(j0, len),
                    );
                }
            });
            // Cᵀ = Bᵀ·Aᵀ, packed with Aᵀ's strips taken from B.
            let transposed = {
                let mut ct = c0.transpose();
                let mut pb = PackedLhs::new();
                pb.pack(&b, Trans::Yes);
                gemm_packed(alpha, &pb, &a, Trans::Yes, beta, &mut ct);
                ct.transpose()
            };
            let _serial = parallel::serial_tests();
            let threads = parallel::num_threads();
            let mut per_threads = Vec::new();
            for t in [1, 2] {
                parallel::set_num_threads(t);
                per_threads.push(run(&|c| gemm(alpha, &a, Trans::No, &b, Trans::No, beta, c)));
            }
            parallel::set_num_threads(threads);
            let want = bits(&whole);
            for (name, c) in [
                ("column halves", &by_cols),
                ("row halves", &by_rows),
                ("gemm", &via_gemm),
                ("gemm column halves", &gemm_cols),
                ("transposed", &transposed),
                ("gemm, 1 thread", &per_threads[0]),
                ("gemm, 2 threads", &per_threads[1]),
            ] {
                assert!(bits(c) == want, "{m}x{k}x{n} {level:?}: {name} differs from the whole product");
            }
            let first = first.get_or_insert_with(|| want.clone());
            assert!(want == *first, "{m}x{k}x{n}: the {level:?} kernel differs from the first");
        }
    }
}

#[test]
fn empty_inner_dimension_scales_c() {
    // k = 0: C = beta·C (beta = 0 writes zeros over NaN), through both routes.
    let b = Mat::<f32>::zeros(0, 5);
    for beta in [0.0f32, 2.0] {
        let mut pa = PackedLhs::new();
        pa.pack(&Mat::<f32>::zeros(40, 0), Trans::No);
        let c0 = Mat::from_element(40, 5, if beta == 0.0 { f32::NAN } else { 1.5 });
        let (mut c1, mut c2) = (c0.clone(), c0.clone());
        gemm_packed(1.0, &pa, &b, Trans::No, beta, &mut c1);
        gemm(1.0, &Mat::<f32>::zeros(40, 0), Trans::No, &b, Trans::No, beta, &mut c2);
        let want = if beta == 0.0 { 0.0 } else { 3.0 };
        assert!(c1.iter().chain(c2.iter()).all(|&v| v == want), "beta {beta}");
    }
}

#[test]
fn clones_multiply_like_the_original() {
    // A clone lives in a buffer of its own: its strips must be realigned (the kernel's loads
    // require 64 bytes). Clone a few times so that some copies start mid-line.
    let mut rng = Rng::seed_from(27);
    let a = rand(&mut rng, 70, 40);
    let b = rand(&mut rng, 40, 13);
    let mut pa = PackedLhs::new();
    pa.pack(&a, Trans::No);
    let mut want = Mat::zeros(70, 13);
    gemm_packed(1.0, &pa, &b, Trans::No, 0.0, &mut want);
    let mut keep = Vec::new();
    for _ in 0..8 {
        keep.push(vec![0u8; 4 * keep.len() + 4]);
        let copy = pa.clone();
        let mut c = Mat::zeros(70, 13);
        gemm_packed(1.0, &copy, &b, Trans::No, 0.0, &mut c);
        assert_eq!(bits(&c), bits(&want));
    }
}

/// A packing filled column by column (`reset` + `columns_writer`, in two pieces as two parts of
/// a time loop would) against `gemm` on the plain matrix, bit for bit (tolerance: none, the
/// kernel's arithmetic does not depend on where its operands come from): as the left operand
/// over a range of its columns (`gemm_packed_cols`, `k0` not a multiple of the 256 block), as
/// the right operand read in place (`gemm_packed_pair`, with the left one packed), its row sums
/// (`add_row_sums` against adding the columns one by one), with one and two threads, on both
/// routes (strips on AVX-512 and on AVX2, and the portable column-major copy). Sizes: rows not a multiple of 32 (the
/// padding rows), products above `kernel::THREAD_MACS` so that two threads split them.
#[test]
fn column_filled_packings_match_gemm() {
    let mut rng = Rng::seed_from(28);
    for cap in [Level::Avx512, Level::Avx2, Level::Baseline] {
        let _cap = TestCap::set(cap);
        for &(m, k, split, k0, n, mw) in &[(70, 90, 33, 11, 40, 20), (1000, 600, 300, 260, 300, 256)] {
            let a = rand(&mut rng, m, k);
            let mut pa = PackedLhs::new();
            pa.reset(m, k);
            {
                let w = pa.columns_writer();
                // SAFETY: the two calls write disjoint columns, one after the other.
                unsafe {
                    w.write(split, a.columns(split, k - split).into_owned().as_slice());
                    w.write(0, a.columns(0, split).into_owned().as_slice());
                }
            }
            assert_eq!(pa.is_strips(), f32_kernel::<f32>().is_some());
            let x = rand(&mut rng, n, k - k0);
            let w = rand(&mut rng, mw, m);
            let mut pw = PackedLhs::new();
            pw.pack(&w, Trans::No);
            let c0 = rand(&mut rng, m, n);
            let d0 = rand(&mut rng, mw, k - k0);
            let _serial = parallel::serial_tests();
            let threads = parallel::num_threads();
            for t in [1, 2] {
                parallel::set_num_threads(t);
                // dW += A[:, k0..]·Xᵀ
                let (mut c1, mut c2) = (c0.clone(), c0.clone());
                gemm_packed_cols(1.0, &pa, k0, &x, Trans::Yes, 1.0, &mut c1);
                gemm(1.0, &a.columns(k0, k - k0), Trans::No, &x, Trans::Yes, 1.0, &mut c2);
                assert!(bits(&c1) == bits(&c2), "{m}x{k} from {k0}, {t} threads: gemm_packed_cols");
                // D = W·A[:, k0..], through the packing and through the writer.
                let (mut d1, mut d2, mut d3) = (d0.clone(), d0.clone(), d0.clone());
                gemm_packed_pair(0.7, &pw, &pa, k0, 0.0, &mut d1);
                // SAFETY: nothing writes the packing meanwhile.
                unsafe { pa.columns_writer().gemm_pair(0.7, &pw, k0, 0.0, &mut d3) };
                gemm_packed(0.7, &pw, &a.columns(k0, k - k0), Trans::No, 0.0, &mut d2);
                assert!(bits(&d1) == bits(&d2), "{m}x{k} from {k0}, {t} threads: gemm_packed_pair");
                assert!(bits(&d3) == bits(&d2), "{m}x{k} from {k0}, {t} threads: gemm_pair");
                // Packing a (split by strips across the threads when large), directly and from
                // its transpose: the values the writer put in.
                for (src, ta) in [(a.clone(), Trans::No), (a.transpose(), Trans::Yes)] {
                    let mut pk = PackedLhs::new();
                    pk.pack(&src, ta);
                    let same = pk.values().iter().zip(pa.values()).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same && pk.values().len() == pa.values().len(),
                        "{m}x{k}, {t} threads: pack {ta:?}"
                    );
                }
                // Row sums (split by strips too), against a plain loop.
                let (s0, s1) = (rand(&mut rng, m, 1), rand(&mut rng, m, 1));
                let (mut r0, mut r1, mut r2) = (s0.clone(), s1.clone(), s0.clone());
                pa.add_row_sums(r0.as_mut_slice(), Some(r1.as_mut_slice()));
                pa.add_row_sums(r2.as_mut_slice(), None);
                let (mut w0, mut w1) = (s0.clone(), s1.clone());
                for p in 0..k {
                    for i in 0..m {
                        w0[i] += a[(i, p)];
                        w1[i] += a[(i, p)];
                    }
                }
                assert!(
                    bits(&r0) == bits(&w0) && bits(&r1) == bits(&w1),
                    "{m}x{k}, {t} threads: add_row_sums"
                );
                assert!(bits(&r2) == bits(&w0), "{m}x{k}, {t} threads: add_row_sums of one");
                // The one-hot product A·Xᵀ into 7 columns, against a plain loop, without and
                // with the row sums on the way (the bits of add_row_sums).
                let targets: Vec<usize> = (0..k).map(|_| rng.below(7)).collect();
                let o0 = rand(&mut rng, m, 7);
                let (mut got, mut got_s, mut want) = (o0.clone(), o0.clone(), o0.clone());
                let mut sums = s0.clone();
                pa.add_columns_into(&targets, got.as_mut_slice(), None);
                pa.add_columns_into(&targets, got_s.as_mut_slice(), Some(sums.as_mut_slice()));
                for (p, &c) in targets.iter().enumerate() {
                    for i in 0..m {
                        want[(i, c)] += a[(i, p)];
                    }
                }
                assert!(bits(&got) == bits(&want), "{m}x{k}, {t} threads: add_columns_into");
                assert!(
                    bits(&got_s) == bits(&want) && bits(&sums) == bits(&w0),
                    "{m}x{k}, {t} threads: add_columns_into with sums"
                );
            }
            parallel::set_num_threads(threads);
        }
    }
}

/// A packing made under one cap and used under another: strips made on AVX-512 or AVX2 used under
/// the portable cap (copied out column-major, multiplied by matrixmultiply), a column-major
/// packing used as the right operand of strips and the other way round, all against f64 (the
/// tolerance of [`check`]); strips made under either kernel and used under the other give the
/// same bits.
#[test]
fn packings_survive_a_change_of_cap() {
    let mut rng = Rng::seed_from(33);
    let (m, k, n, j0) = (70, 90, 40, 11);
    let a = rand(&mut rng, m, k);
    let w = rand(&mut rng, 20, m);
    let x = rand(&mut rng, k, n);
    let pack_under = |level, x: &Mat<f32>| {
        let _cap = TestCap::set(level);
        let mut p = PackedLhs::new();
        p.pack(x, Trans::No);
        p
    };
    let close = |got: &Mat<f32>, want: &Mat<f64>, what: &str| {
        let err = got.map(|v| v as f64) - want;
        assert!(err.abs().max() < 1e-4, "{what}: error {}", err.abs().max());
    };
    let ax = op(&a, Trans::No) * op(&x, Trans::No);
    let wa = op(&w, Trans::No) * op(&a, Trans::No).columns(j0, k - j0);
    let levels = [Level::Avx512, Level::Avx2, Level::Baseline];
    let mut bits_by_kernel = Vec::new();
    for made in levels {
        let (pa, pw) = (pack_under(made, &a), pack_under(made, &w));
        for used in levels {
            let _cap = TestCap::set(used);
            let mut c = Mat::from_element(m, n, f32::NAN);
            gemm_packed(1.0, &pa, &x, Trans::No, 0.0, &mut c);
            close(&c, &ax, &format!("made {made:?}, used {used:?}: gemm_packed"));
            for other in levels {
                let po = pack_under(other, &a);
                let mut d = Mat::from_element(20, k - j0, f32::NAN);
                gemm_packed_pair(1.0, &pw, &po, j0, 0.0, &mut d);
                close(&d, &wa, &format!("made {made:?} and {other:?}, used {used:?}: gemm_packed_pair"));
            }
            if pa.is_strips() && f32_kernel::<f32>().is_some() {
                bits_by_kernel.push(bits(&c));
            }
        }
    }
    assert!(bits_by_kernel.windows(2).all(|p| p[0] == p[1]), "strips made and used under AVX-512 and AVX2");
}

/// The blocking below the `k` blocks comes from the L2 size at run time and never changes a
/// bit: products under the blockings of 256 KB and 512 KB L2s (several groups of strips and
/// blocks of columns where this CPU's has one), and with panels of `NR` columns but a narrower
/// last instead of balanced widths, equal those under this CPU's, on every route and kernel. The shapes stay below `kernel::THREAD_MACS`, so every product runs on this thread.
#[test]
fn blocking_does_not_change_bits() {
    use kernel::{Blocking, TestBlocking};
    let tuned = Blocking { mc_strips: 8, nc: 264, balanced_panels: true };
    assert_eq!(Blocking::for_l2(1 << 20), tuned);
    assert_eq!(Blocking::for_l2(2 << 20), tuned);
    assert_eq!(Blocking::for_l2(1280 << 10), tuned);
    assert_eq!(Blocking::for_l2(512 << 10), Blocking { mc_strips: 4, nc: 132, balanced_panels: true });
    assert_eq!(Blocking::for_l2(256 << 10), Blocking { mc_strips: 2, nc: 72, balanced_panels: true });
    if f32_kernel::<f32>().is_none() {
        println!("no AVX2 or AVX-512: the portable route has no blocking of its own");
        return;
    }
    let mut rng = Rng::seed_from(31);
    const { assert!(70 * 300 * 90 <= kernel::THREAD_MACS && 33 * 700 * 80 <= kernel::THREAD_MACS) };
    for &(m, k, n) in &[(70, 300, 90), (100, 520, 30), (33, 700, 80)] {
        let a = rand(&mut rng, m, k);
        let at = a.transpose();
        let b = rand(&mut rng, k, n);
        let c0 = rand(&mut rng, m, n);
        let mut pa = PackedLhs::new();
        pa.pack(&a, Trans::No);
        let mut pb = PackedLhs::new();
        pb.pack(&b, Trans::No);
        let mut results: Vec<[Vec<u32>; 4]> = Vec::new();
        for level in [Level::Avx512, Level::Avx2] {
            let _cap = TestCap::set(level);
            if f32_kernel::<f32>() != Some(level) {
                continue;
            }
            let narrow_last = Blocking { balanced_panels: false, ..tuned };
            for blocking in [
                None,
                Some(Blocking::for_l2(256 << 10)),
                Some(Blocking::for_l2(512 << 10)),
                Some(narrow_last),
            ] {
                let _b = TestBlocking::set(blocking);
                let run = |f: &dyn Fn(&mut Mat<f32>)| {
                    let mut c = c0.clone();
                    f(&mut c);
                    bits(&c)
                };
                results.push([
                    run(&|c| gemm(0.9, &a, Trans::No, &b, Trans::No, 1.1, c)),
                    run(&|c| gemm(0.9, &at, Trans::Yes, &b, Trans::No, 1.1, c)),
                    run(&|c| gemm_packed(0.9, &pa, &b, Trans::No, 1.1, c)),
                    run(&|c| gemm_packed_pair(0.9, &pa, &pb, 0, 1.1, c)),
                ]);
            }
        }
        for r in &results {
            for route in r {
                assert!(route == &results[0][0], "{m}x{k}x{n}: a blocking or route changed the bits");
            }
        }
    }
}

/// `gemm_packed_sums` gives the bits of `gemm_packed` then `add_row_sums`, for the product and
/// both sums, on every kernel, with one thread and two (split by rows, and by columns for the
/// wide product), over several `k` blocks and from sums that are not zero.
#[test]
fn fused_row_sums_match_the_separate_pass() {
    let mut rng = Rng::seed_from(41);
    for &(m, k, n) in &[(100, 600, 40), (70, 300, 1), (1024, 1536, 256), (64, 1100, 1000), (33, 7, 5)] {
        let a = rand(&mut rng, m, k);
        let b = rand(&mut rng, n, k);
        let c0 = rand(&mut rng, m, n);
        let (s0, t0): (Vec<f32>, Vec<f32>) =
            (0..m).map(|_| (rng.uniform(-1.0, 1.0) as f32, rng.uniform(-1.0, 1.0) as f32)).unzip();
        let mut pa = PackedLhs::new();
        pa.pack(&a, Trans::No);
        let _serial = parallel::serial_tests();
        let threads = parallel::num_threads();
        let mut want: Option<(Vec<u32>, Vec<f32>, Vec<f32>)> = None;
        for level in [Level::Avx512, Level::Avx2, Level::Baseline] {
            let _cap = TestCap::set(level);
            if level != Level::Baseline && f32_kernel::<f32>() != Some(level) {
                continue;
            }
            for t in [1, 2] {
                parallel::set_num_threads(t);
                let mut c = c0.clone();
                let (mut s, mut u) = (s0.clone(), t0.clone());
                gemm_packed(0.7, &pa, &b, Trans::Yes, 1.3, &mut c);
                pa.add_row_sums(&mut s, Some(&mut u));
                let sep = (bits(&c), s, u);
                let mut c = c0.clone();
                let (mut s, mut u) = (s0.clone(), t0.clone());
                gemm_packed_sums(0.7, &pa, 0, &b, Trans::Yes, 1.3, &mut c, &mut s, Some(&mut u));
                let fused = (bits(&c), s, u);
                let mut s1 = s0.clone();
                let mut c1 = c0.clone();
                gemm_packed_sums(0.7, &pa, 0, &b, Trans::Yes, 1.3, &mut c1, &mut s1, None);
                let as_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    sep.0 == fused.0 && sep.0 == bits(&c1),
                    "{m}x{k}x{n} {level:?} {t} threads: the product changed"
                );
                assert!(
                    as_bits(&sep.1) == as_bits(&fused.1)
                        && as_bits(&sep.2) == as_bits(&fused.2)
                        && as_bits(&s1) == as_bits(&sep.1),
                    "{m}x{k}x{n} {level:?} {t} threads: the fused sums differ from the pass"
                );
                let w = want.get_or_insert_with(|| sep.clone());
                assert!(as_bits(&w.1) == as_bits(&sep.1), "{m}x{k}x{n}: the sums differ between kernels");
                // Columns k0..k0 + kb alone: the product of those columns and their sums, fused
                // and apart, against plain loops for the sums.
                let (k0, kb) = (k / 3, k - k / 3 - k / 5);
                let bk = b.columns(k0, kb);
                let mut c = c0.clone();
                let (mut s, mut u) = (s0.clone(), t0.clone());
                gemm_packed_cols(0.7, &pa, k0, &bk, Trans::Yes, 1.3, &mut c);
                pa.add_row_sums_of(k0..k0 + kb, &mut s, Some(&mut u));
                let mut cf = c0.clone();
                let mut sf = s0.clone();
                gemm_packed_sums(0.7, &pa, k0, &bk, Trans::Yes, 1.3, &mut cf, &mut sf, None);
                let plain = |from: &[f32]| -> Vec<u32> {
                    (0..m).map(|i| (k0..k0 + kb).fold(from[i], |acc, p| acc + a[(i, p)]).to_bits()).collect()
                };
                assert!(
                    bits(&c) == bits(&cf)
                        && as_bits(&s) == plain(&s0)
                        && as_bits(&u) == plain(&t0)
                        && as_bits(&sf) == plain(&s0),
                    "{m}x{k}x{n} {level:?} {t} threads: columns {k0}.. of the product or their sums differ"
                );
            }
        }
        parallel::set_num_threads(threads);
    }
}
