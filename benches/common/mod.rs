//! What both bench binaries share: the workloads, the timing loops, the
//! G7 byte count and the font for plots.

pub mod alloc;
pub mod floor;
pub mod footprint;
pub mod suite;
pub mod threads;

/// Registers DejaVu Sans (embedded by the `dejavu` crate) as plotters'
/// "sans-serif" family: plotters' `ab_glyph` text rendering loads no system
/// fonts, so plots need nothing installed beyond the Rust toolchain.
pub fn register_font() {
    if plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        dejavu::sans::regular(),
    )
    .is_err()
    {
        eprintln!("warning: could not load the embedded font; plots will lack text");
    }
}
