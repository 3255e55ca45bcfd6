use rnn_tensor::{gemm_packed, Mat, PackedLhs, Trans};
use std::time::Instant;

fn main() {
    rnn_tensor::parallel::set_num_threads(1);
    let args: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (m, k) = (args[0], args[1]);
    let a = Mat::<f32>::from_fn(m, k, |i, j| ((i * 7 + j * 13) % 17) as f32 * 0.01 - 0.05);
    let mut pa = PackedLhs::new();
    pa.pack(&a, Trans::No);
    for &n in &args[2..] {
        let b = Mat::<f32>::from_fn(k, n, |i, j| ((i * 3 + j * 5) % 11) as f32 * 0.01 - 0.03);
        let mut c = Mat::<f32>::zeros(m, n);
        let mut t = vec![];
        for _ in 0..801 {
            let t0 = Instant::now();
            gemm_packed(1.0, &pa, &b, Trans::No, 0.0, &mut c);
            t.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        t.sort_by(|x, y| x.partial_cmp(y).unwrap());
        println!(
            "{m}x{k}x{n}: median {:.1} us best {:.1}  {:.1} GFLOP/s (best {:.1})",
            t[400],
            t[0],
            2.0 * (m * k * n) as f64 / t[400] / 1e3,
            2.0 * (m * k * n) as f64 / t[0] / 1e3
        );
    }
}
