//! Stage 1: a linear RNN learns to count the ones in a binary stream, trained by backpropagation
//! through time and the tutorial's sign-based Rprop.
//!
//! ```text
//! cargo run --release --example count_ones              # the tutorial's 20 × 10 dataset
//! cargo run --release --example count_ones -- --random  # a fresh seeded random dataset
//! ```
//!
//! Options: `--random`, `--seed N` (for `--random`, default 1), `--plot FILE` (default
//! `count_ones.png`). The model is `s_k = s_{k-1}·w_rec + x_k·w_x` from `s_0 = 0`, its output the
//! last state; the loss is the MSE against the counts. It starts at `(w_x, w_rec) = (-1.5, 2)`,
//! where the gradient is in the millions, and Rprop (Δ = 0.001, eta_plus 1.2, eta_minus 0.5)
//! walks to `(1, 1)` in 500 iterations using only the gradient's signs. The plot shows the loss
//! surface with that path on it; see `docs/01-counting-ones.md`.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use rnn::cells::{last_state_mse, LinearCache, LinearCell, LinearConfig, LinearParams};
use rnn::data::{count_ones_fixture, BinaryStreams, BinaryStreamsConfig};
use rnn::optim::{step_model, BasicRpropConfig};
use rnn::prelude::*;

/// What the command line chose.
struct Args {
    random: bool,
    seed: u64,
    plot: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: count_ones [--random] [--seed N] [--plot FILE]";
    let mut args = Args { random: false, seed: 1, plot: PathBuf::from("count_ones.png") };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--random" => args.random = true,
            "--seed" => {
                let v = it.next().ok_or(format!("--seed needs a number\n{usage}"))?;
                args.seed =
                    v.parse().map_err(|_| format!("--seed needs a whole number, got {v:?}\n{usage}"))?;
            }
            "--plot" => args.plot = it.next().ok_or(format!("--plot needs a file name\n{usage}"))?.into(),
            "-h" | "--help" => return Err(usage.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{usage}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };

    let data: BinaryStreams<f64> = if args.random {
        println!("data: 20 random binary streams of 10 steps (seed {})", args.seed);
        BinaryStreamsConfig::new(20, 10).build(&mut Rng::seed_from(args.seed))?
    } else {
        println!("data: the tutorial's 20 binary streams of 10 steps (fixture count_ones_20x10.txt)");
        count_ones_fixture()
    };

    // The model starts from fixed weights, so the generator is never drawn from.
    let mut cell = LinearConfig::new().with_weights(-1.5, 2.0).build::<f64>(&mut Rng::seed_from(0))?;
    let mut opt = BasicRpropConfig::new().with_initial_step(0.001).with_etas(1.2, 0.5).build::<f64>()?;

    let mut cache = LinearCache::default();
    let mut grads = cell.zero_grads();
    let mut path = vec![(cell.params.wx(), cell.params.wrec())];
    for i in 0..500 {
        grads.zero();
        let loss = cell.mse_gradients(data.inputs(), data.batch(), data.targets(), &mut cache, &mut grads)?;
        if i % 100 == 0 {
            println!(
                "iteration {i:3}: loss {loss:11.4e}, gradient (w_x, w_rec) = ({:10.3e}, {:10.3e})",
                grads.wx(),
                grads.wrec()
            );
        }
        step_model(&mut opt, &mut cell.params, &grads)?;
        path.push((cell.params.wx(), cell.params.wrec()));
    }
    println!("final weights: wx = {:.4}, wRec = {:.4}", cell.params.wx(), cell.params.wrec());

    let test = BinaryStreams::<f64>::from_rows(&[[0u8, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 1]])?;
    let model = cell.run(test.inputs(), 1)?;
    println!("target {}, model {:.2}", test.targets()[0], model[(0, 0)]);

    // Why a sign-based optimizer: the size of the gradient across the surface.
    for (wx, wrec) in [(1.0, 2.0), (-1.5, 2.0), (1.0, 1.0), (1.0, 0.5)] {
        let probe = LinearCell { params: LinearParams::new(wx, wrec) };
        let mut g = probe.zero_grads();
        probe.mse_gradients(data.inputs(), data.batch(), data.targets(), &mut cache, &mut g)?;
        println!("gradient at (w_x, w_rec) = ({wx:4}, {wrec:3}): ({:11.4e}, {:11.4e})", g.wx(), g.wrec());
    }

    plot_surface(&args.plot, &data, &path)?;
    let shown = std::fs::canonicalize(&args.plot).unwrap_or_else(|_| args.plot.clone());
    println!("wrote {}", shown.display());
    Ok(())
}

/// The plotted window of the surface.
const WX: (f64, f64) = (-2.5, 2.5);
const WREC: (f64, f64) = (-0.5, 2.5);
/// Grid cells per axis of the heat map.
const GRID: (usize, usize) = (200, 120);

/// A perceptually ordered colour map (five anchors of viridis, linearly interpolated), `v` in [0, 1].
fn viridis(v: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = v.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Writes the loss surface `log10 ξ(w_x, w_rec)` as a heat map with the Rprop `path` on it.
fn plot_surface(file: &Path, data: &BinaryStreams<f64>, path: &[(f64, f64)]) -> Result<(), Box<dyn Error>> {
    // plotters draws text with ab_glyph, which needs a font registered from bytes.
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded DejaVu Sans font could not be read")?;

    // The loss on the grid, at each cell's centre; floored at 1e-6 so the minimum has a log.
    let (nx, ny) = GRID;
    let (dx, dy) = ((WX.1 - WX.0) / nx as f64, (WREC.1 - WREC.0) / ny as f64);
    let mut logs = vec![0.0; nx * ny];
    for j in 0..ny {
        for i in 0..nx {
            let (wx, wrec) = (WX.0 + (i as f64 + 0.5) * dx, WREC.0 + (j as f64 + 0.5) * dy);
            let cell = LinearCell { params: LinearParams::new(wx, wrec) };
            let (loss, _) = last_state_mse(&cell.run(data.inputs(), data.batch())?, data.targets())?;
            logs[j * nx + i] = loss.max(1e-6).log10();
        }
    }
    let (lo, hi) = logs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));

    let root = BitMapBackend::new(file, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, bar) = root.split_horizontally(880);

    let mut chart = ChartBuilder::on(&main)
        .caption("Counting ones: log10 MSE over (w_x, w_rec) and the Rprop path", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(WX.0..WX.1, WREC.0..WREC.1)?;
    chart.draw_series((0..nx * ny).map(|k| {
        let (i, j) = (k % nx, k / nx);
        let (x0, y0) = (WX.0 + i as f64 * dx, WREC.0 + j as f64 * dy);
        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], viridis((logs[k] - lo) / (hi - lo)).filled())
    }))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("w_x")
        .y_desc("w_rec")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;

    let path_style = ShapeStyle::from(&RED).stroke_width(2);
    chart
        // One segment per step: a polyline's miter joins spike where Rprop reverses direction.
        .draw_series(path.windows(2).map(|w| PathElement::new(vec![w[0], w[1]], path_style)))?
        .label(format!("Rprop path ({} iterations)", path.len() - 1))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], path_style));
    chart.draw_series(path.iter().map(|&p| Circle::new(p, 2, RED.filled())))?;
    let (start, end) = (path[0], path[path.len() - 1]);
    chart
        .draw_series([Circle::new(start, 6, WHITE.filled())])?
        .label(format!("start ({:.1}, {:.1})", start.0, start.1))
        .legend(|(x, y)| Circle::new((x + 10, y), 5, WHITE.filled()));
    chart
        .draw_series([TriangleMarker::new(end, 9, WHITE.filled())])?
        .label(format!("end ({:.4}, {:.4})", end.0, end.1))
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, WHITE.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;

    // The colour bar.
    let mut scale = ChartBuilder::on(&bar)
        .margin_top(48)
        .margin_bottom(56)
        .margin_right(12)
        .y_label_area_size(52)
        .caption("log10 MSE", ("sans-serif", 15))
        .build_cartesian_2d(0.0..1.0, lo..hi)?;
    scale.configure_mesh().disable_mesh().disable_x_axis().label_style(("sans-serif", 14)).draw()?;
    let steps = 200;
    scale.draw_series((0..steps).map(|k| {
        let (a, b) =
            (lo + (hi - lo) * k as f64 / steps as f64, lo + (hi - lo) * (k + 1) as f64 / steps as f64);
        Rectangle::new([(0.0, a), (1.0, b)], viridis((a - lo) / (hi - lo)).filled())
    }))?;

    root.present()?;
    Ok(())
}
