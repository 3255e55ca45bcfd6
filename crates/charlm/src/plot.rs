//! The loss curves as a PNG (plotters' bitmap backend, DejaVu Sans registered from the `dejavu`
//! crate because the machines have no system fonts).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::CharLmError;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TTF shipped by the crate, so this cannot fail in practice; if it
        // did, text would be missing and drawing would report the error.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The plot's size in pixels.
const SIZE: (u32, u32) = (900, 540);

/// Draws the training and validation losses (nats per character) against the step into
/// `path`. The image is drawn in memory, encoded as PNG and written atomically
/// ([`rnn_io::write_atomic`]), so a failure is an I/O error with a plain message.
pub fn plot_losses(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)]) -> Result<(), CharLmError> {
    register_font();
    let bad = |e: String| CharLmError::write(path, std::io::Error::other(e));
    let mut pixels = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    draw(BitMapBackend::with_buffer(&mut pixels, SIZE), train, val).map_err(bad)?;
    let png = encode_png(&pixels, SIZE).map_err(|e| bad(e.to_string()))?;
    Ok(rnn_io::write_atomic(path, &png)?)
}

/// RGB pixels as a PNG file's bytes.
fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

fn draw(backend: BitMapBackend<'_>, train: &[(u64, f64)], val: &[(u64, f64)]) -> Result<(), String> {
    let all = train.iter().chain(val).filter(|(_, l)| l.is_finite());
    let (mut lo, mut hi, mut last) = (f64::INFINITY, f64::NEG_INFINITY, 1u64);
    for &(s, l) in all {
        lo = lo.min(l);
        hi = hi.max(l);
        last = last.max(s);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("charlm loss", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..last, (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (nats per character)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(train.iter().copied(), &BLUE))
        .map_err(|e| e.to_string())?
        .label("training")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label("validation")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    // Markers too: a run with one validation has no line to draw.
    chart
        .draw_series(val.iter().map(|&(s, l)| Circle::new((s, l), 3, RED.filled())))
        .map_err(|e| e.to_string())?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_and_reports_unwritable_paths() {
        let dir = std::env::temp_dir().join(format!("charlm-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.png");
        let train: Vec<(u64, f64)> = (1..=50).map(|s| (s, 4.0 / (s as f64).sqrt())).collect();
        plot_losses(&path, &train, &[(10, 1.6), (50, 0.9)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // An unwritable target is a clean error (the operating system's words, no Debug
        // structure), and no temporary file is left behind.
        let e = plot_losses(&dir.join("no/such/dir/loss.png"), &train, &[]).unwrap_err().to_string();
        assert!(e.starts_with("cannot write") && e.contains("No such file or directory (os error 2)"), "{e}");
        assert!(!e.contains("Os {") && !e.contains("kind:"), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
