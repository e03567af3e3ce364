//! The journey's chart (`journey.svg`), drawn with `plotters` and its SVG backend: one bar per
//! load stage for its successful requests/s (left axis, round 1-2-5 ticks), coloured by the
//! stage's bottleneck, and a line for its p99 latency on a logarithmic right axis with a tick per
//! decade (1 ms, 10 ms, 100 ms, 1 s, 10 s), so that a stage that hit the 10 s timeout does not
//! flatten the others. Under each bar: the stage's number and name (wrapped to the bar's width),
//! its bottleneck, and whether it has the story's shape (holds / FAILS); a legend below says
//! what the colours, the line and the marks mean.
//!
//! [`super::report`]'s `write_svg` calls [`svg`]; like the other renderers it reads the
//! [`model`](super::model) only. The output depends on the report alone (no fonts are read:
//! text widths are estimated), so the fixture test can compare it byte for byte.

use std::io;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::model::{Component, JourneyReport, StageKind, StageResult};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
/// The header (title and subtitle) above the chart.
const HEADER: u32 = 58;
/// Below the chart: the legend's rows and the footer line.
const LEGEND_ROW: i32 = 20;
const FOOTER: u32 = 20;
/// Left and right of the plot: the axes' tick labels and descriptions.
const AXIS_AREA: u32 = 78;
/// Left and right of the axes.
const MARGIN: u32 = 8;
const LINE: i32 = 14;

const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);
const LATENCY: RGBColor = RGBColor(0x11, 0x11, 0x11);
const HOLDS: RGBColor = RGBColor(0x1e, 0x84, 0x49);
const FAILS: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
/// A bottleneck that is none of the [`Component`]s.
const OTHER: RGBColor = RGBColor(0x95, 0xa5, 0xa6);

/// The colour of a bar whose stage is limited by `component`.
fn colour(component: Option<Component>) -> RGBColor {
    match component {
        Some(Component::Database) => RGBColor(0x2e, 0x86, 0xc1),
        Some(Component::Api) => RGBColor(0x8e, 0x44, 0xad),
        Some(Component::Nginx) => RGBColor(0x17, 0xa5, 0x89),
        Some(Component::LoadGenerator) => RGBColor(0xe6, 0x7e, 0x22),
        Some(Component::Machine) => RGBColor(0x7f, 0x8c, 0x8d),
        None => OTHER,
    }
}

/// A sans-serif font of `px` pixels in the SVG (plotters writes its size divided by 1.24).
fn font(px: f64) -> TextStyle<'static> {
    ("sans-serif", px * 1.24).into_font().color(&TEXT)
}

fn bold(px: f64) -> TextStyle<'static> {
    ("sans-serif", px * 1.24)
        .into_font()
        .style(FontStyle::Bold)
        .color(&TEXT)
}

/// The width `text` takes at `px` pixels, a little generous for a sans-serif font.
fn text_width(text: &str, px: f64) -> f64 {
    text.chars().count() as f64 * px * 0.58
}

/// One load stage as the chart draws it.
struct Bar<'a> {
    stage: &'a StageResult,
    successful_per_sec: f64,
    p99_ms: f64,
}

/// The whole chart as an SVG document.
pub fn svg(report: &JourneyReport) -> io::Result<String> {
    let bars: Vec<Bar> = report
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Load)
        .filter_map(|stage| {
            let l = stage.load.as_ref()?;
            Some(Bar {
                stage,
                successful_per_sec: l.successful_per_sec.max(0.0),
                // A log axis has no zero: a stage under 1 µs sits at 1 µs.
                p99_ms: (l.latency.p99_us as f64 / 1000.0).max(0.001),
            })
        })
        .collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, report, &bars).map_err(io::Error::other)?;
        root.present().map_err(io::Error::other)?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<io::Error>>;

/// A box in the backend's pixels: left, top, right, bottom.
#[derive(Clone, Copy)]
struct PixelBox(i32, i32, i32, i32);

impl PixelBox {
    /// A box of `width` x [`LINE`] centred on `x`, from `top` down.
    fn centred(x: i32, top: i32, width: f64) -> PixelBox {
        let half = (width / 2.0).ceil() as i32 + 2;
        PixelBox(x - half, top, x + half, top + LINE)
    }

    fn overlaps(&self, o: &PixelBox) -> bool {
        self.0 < o.2 && o.0 < self.2 && self.1 < o.3 && o.1 < self.3
    }

    fn contains(&self, (x, y): (i32, i32)) -> bool {
        self.0 - 1 <= x && x <= self.2 + 1 && self.1 - 1 <= y && y <= self.3 + 1
    }

    /// Whether the segment from `a` to `b` passes through the box (sampled every few pixels).
    fn crosses(&self, a: (i32, i32), b: (i32, i32)) -> bool {
        let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) / 2).max(1);
        (0..=steps).any(|i| {
            let t = i as f64 / steps as f64;
            let at = |u: i32, v: i32| (u as f64 + (v - u) as f64 * t).round() as i32;
            self.contains((at(a.0, b.0), at(a.1, b.1)))
        })
    }

    fn centre_x(&self) -> i32 {
        (self.0 + self.2) / 2
    }
}

/// How the stages share the plot's width, and the lines under each bar.
struct Layout {
    /// Pixels per stage.
    slot: f64,
    /// Lines of the stages' names (1 to 3).
    name_lines: usize,
    any_shape: bool,
}

impl Layout {
    fn new(bars: &[Bar]) -> Layout {
        let plot = (WIDTH - 2 * AXIS_AREA - 2 * MARGIN) as f64;
        let slot = plot / bars.len().max(1) as f64;
        let mut layout = Layout {
            slot,
            name_lines: 1,
            any_shape: bars.iter().any(|b| b.stage.shape.is_some()),
        };
        layout.name_lines = bars
            .iter()
            .map(|b| layout.name(b.stage).len())
            .fold(1, usize::max);
        layout
    }

    /// Room for a line of text under a bar.
    fn room(&self) -> f64 {
        self.slot - 8.0
    }

    /// Half a bar's width, in stages (the x axis's unit): at most 120 pixels wide.
    fn half_bar(&self) -> f64 {
        (60.0 / self.slot).min(0.32)
    }

    fn name(&self, stage: &StageResult) -> Vec<String> {
        wrap(&stage.name, self.room(), 11.0, 3)
    }

    /// The height of the labels under the plot.
    fn labels_height(&self) -> u32 {
        let lines = 1 + self.name_lines + 1 + usize::from(self.any_shape);
        (lines as i32 * LINE + 18) as u32
    }
}

fn draw(root: &Area, report: &JourneyReport, bars: &[Bar]) -> DrawResult {
    root.fill(&WHITE)?;
    let (header, rest) = root.split_vertically(HEADER);
    draw_header(&header, report, !bars.is_empty())?;
    let legend = legend_items(bars);
    let legend_h = legend_rows(&legend) * LEGEND_ROW + 8;
    let (body, bottom) = rest.split_vertically(rest.dim_in_pixel().1 - legend_h as u32 - FOOTER);
    if bars.is_empty() {
        body.draw(&Text::new(
            "No load stage was measured: nothing to chart.",
            ((WIDTH / 2) as i32, 120),
            font(14.0).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    } else {
        draw_chart(root, &body, bars, &Layout::new(bars))?;
        draw_legend(&bottom, &legend)?;
    }
    bottom.draw(&Text::new(
        format!(
            "Stage numbers as in journey.md; {} products. Drawn by loadgen journey.",
            report.products
        ),
        (MARGIN as i32 + 4, bottom.dim_in_pixel().1 as i32 - 6),
        font(10.0)
            .color(&MUTED)
            .pos(Pos::new(HPos::Left, VPos::Bottom)),
    ))
}

fn draw_header(area: &Area, report: &JourneyReport, subtitle: bool) -> DrawResult {
    let cores = format!(
        " \u{2014} {} core{}",
        report.machine.cores,
        if report.machine.cores == 1 { "" } else { "s" }
    );
    // Bold text is wider than the estimate for the regular face.
    let room = WIDTH as f64 - 40.0 - text_width(&cores, 18.5);
    let title = format!("{}{cores}", truncate(&report.journey, room, 18.5));
    let centre = (WIDTH / 2) as i32;
    area.draw(&Text::new(
        title,
        (centre, 10),
        bold(17.0).pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    if !subtitle {
        return Ok(());
    }
    area.draw(&Text::new(
        "Bars: successful requests/s (left axis). Line: p99 latency (right axis, log scale).",
        (centre, 36),
        font(12.0)
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))
}

/// The plot in `area`; what is placed by pixel is drawn on `root`, in the backend's pixels.
fn draw_chart(root: &Area, area: &Area, bars: &[Bar], layout: &Layout) -> DrawResult {
    let n = bars.len() as f64;
    let rps = RpsAxis::new(
        bars.iter()
            .map(|b| b.successful_per_sec)
            .fold(0.0, f64::max),
    );
    let lat = LatencyAxis::new(bars.iter().map(|b| b.p99_ms));
    let mut chart = ChartBuilder::on(area)
        .margin_top(8)
        .margin_left(MARGIN)
        .margin_right(MARGIN)
        .x_label_area_size(layout.labels_height())
        .y_label_area_size(AXIS_AREA)
        .right_y_label_area_size(AXIS_AREA)
        .build_cartesian_2d(0.0..n, 0.0..rps.top)?
        .set_secondary_coord(0.0..n, (lat.bottom..lat.top).log_scale());
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(rps.ticks)
        .y_label_formatter(&|v| rps.label(*v))
        .y_label_style(font(11.0))
        .y_desc("successful requests/s")
        .axis_desc_style(font(12.0))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .light_line_style(TRANSPARENT)
        .axis_style(MUTED)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_labels(lat.ticks)
        .y_label_formatter(&|v| LatencyAxis::label(*v))
        .label_style(font(11.0))
        .y_desc("p99 latency (log scale)")
        .axis_desc_style(font(12.0))
        .axis_style(MUTED)
        .draw()?;

    let half = layout.half_bar();
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64 + 0.5;
        Rectangle::new(
            [(x - half, 0.0), (x + half, b.successful_per_sec)],
            colour(Component::from_name(&b.stage.bottleneck)).filled(),
        )
    }))?;
    // Each bar's value, inside its top when it is tall enough, above it otherwise.
    let (_, plot_y) = chart.plotting_area().get_pixel_range();
    let mut taken = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        let (x, top) = chart.backend_coord(&(i as f64 + 0.5, b.successful_per_sec));
        let inside = plot_y.end - top > 2 * LINE;
        let (y, style) = if inside {
            (top + 4, bold(11.0).color(&WHITE))
        } else {
            (top - 4 - LINE, bold(11.0))
        };
        let value = rps.value(b.successful_per_sec);
        taken.push(PixelBox::centred(x, y, text_width(&value, 11.0)));
        root.draw(&Text::new(
            value,
            (x, y),
            style.pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }

    let points: Vec<(f64, f64)> = bars
        .iter()
        .enumerate()
        .map(|(i, b)| (i as f64 + 0.5, b.p99_ms))
        .collect();
    chart.draw_secondary_series(std::iter::once(PathElement::new(
        points.clone(),
        LATENCY.stroke_width(2),
    )))?;
    chart.draw_secondary_series(points.iter().map(|p| Circle::new(*p, 4, LATENCY.filled())))?;
    let pixels: Vec<(i32, i32)> = points
        .iter()
        .map(|p| chart.borrow_secondary().backend_coord(p))
        .collect();
    let (plot_x, _) = chart.plotting_area().get_pixel_range();
    let plot = PixelBox(plot_x.start, plot_y.start, plot_x.end, plot_y.end);
    for (b, &at) in bars.iter().zip(&pixels) {
        let label = LatencyAxis::value(b.p99_ms);
        let place = place_label(at, text_width(&label, 11.0), &plot, &pixels, &taken);
        taken.push(place);
        root.draw(&Rectangle::new(
            [(place.0, place.1), (place.2, place.3)],
            WHITE.mix(0.85).filled(),
        ))?;
        root.draw(&Text::new(
            label,
            (place.centre_x(), place.1),
            font(11.0).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }

    let centres: Vec<i32> = (0..bars.len())
        .map(|i| chart.backend_coord(&(i as f64 + 0.5, 0.0)).0)
        .collect();
    draw_stage_labels(root, bars, &centres, layout, plot_y.end)
}

/// Where a point's latency label goes: above it, below it, or beside it, whichever first
/// stays in the plot and clear of the line, the points and the labels already placed.
fn place_label(
    (x, y): (i32, i32),
    width: f64,
    plot: &PixelBox,
    line: &[(i32, i32)],
    taken: &[PixelBox],
) -> PixelBox {
    let w = width.ceil() as i32 + 4;
    let candidates = [
        PixelBox::centred(x, y - 8 - LINE, width),
        PixelBox::centred(x, y + 8, width),
        PixelBox(x + 7, y - 7 - LINE, x + 7 + w, y - 7),
        PixelBox(x + 7, y + 7, x + 7 + w, y + 7 + LINE),
        PixelBox(x - 7 - w, y - 7 - LINE, x - 7, y - 7),
        PixelBox(x - 7 - w, y + 7, x - 7, y + 7 + LINE),
    ];
    let clear = |c: &PixelBox| {
        plot.0 <= c.0
            && c.2 <= plot.2
            && plot.1 <= c.1
            && c.3 <= plot.3
            && !taken.iter().any(|t| t.overlaps(c))
            && !line.windows(2).any(|s| c.crosses(s[0], s[1]))
            && !line
                .iter()
                .any(|&(px, py)| c.overlaps(&PixelBox(px - 5, py - 5, px + 5, py + 5)))
    };
    candidates
        .iter()
        .find(|c| clear(c))
        .copied()
        .unwrap_or(candidates[0])
}

/// Under each bar, each line fitted to the slot: the stage's number, its name, its bottleneck
/// and its shape.
fn draw_stage_labels(
    root: &Area,
    bars: &[Bar],
    centres: &[i32],
    layout: &Layout,
    plot_bottom: i32,
) -> DrawResult {
    let top = Pos::new(HPos::Center, VPos::Top);
    let room = layout.room();
    for (b, &x) in bars.iter().zip(centres) {
        let mut y = plot_bottom + 6;
        root.draw(&Text::new(
            b.stage.number.to_string(),
            (x, y),
            bold(12.0).pos(top),
        ))?;
        y += LINE + 1;
        for (i, line) in layout.name(b.stage).into_iter().enumerate() {
            root.draw(&Text::new(
                line,
                (x, y + i as i32 * LINE),
                font(11.0).pos(top),
            ))?;
        }
        y += layout.name_lines as i32 * LINE + 3;
        let unbudgeted = b.stage.topology.as_ref().is_some_and(|t| !t.budgeted);
        let limit = [
            format!("limit: {}", b.stage.bottleneck),
            b.stage.bottleneck.clone(),
        ]
        .into_iter()
        .map(|l| {
            if unbudgeted {
                format!("{l}, unbudgeted")
            } else {
                l
            }
        })
        .find(|l| text_width(l, 10.0) <= room)
        .unwrap_or_else(|| b.stage.bottleneck.clone());
        let component = Component::from_name(&b.stage.bottleneck);
        root.draw(&Text::new(
            truncate(&limit, room, 10.0),
            (x, y),
            font(10.0).color(&darker(colour(component))).pos(top),
        ))?;
        y += LINE;
        if let Some(shape) = &b.stage.shape {
            let (word, c) = if shape.holds {
                ("holds", HOLDS)
            } else {
                ("FAILS", FAILS)
            };
            let long = format!("shape {word}");
            let text = if text_width(&long, 10.5) <= room {
                long
            } else {
                word.to_string()
            };
            root.draw(&Text::new(text, (x, y), bold(10.0).color(&c).pos(top)))?;
        }
    }
    Ok(())
}

fn darker(c: RGBColor) -> RGBColor {
    let d = |v: u8| (v as f64 * 0.7).round() as u8;
    RGBColor(d(c.0), d(c.1), d(c.2))
}

/// What the legend shows: a swatch (a colour, the line, or the word under the bars), then text.
enum LegendItem {
    Bottleneck(String, RGBColor),
    Latency,
    /// The shape's verdict: holds, or FAILS.
    Shape(bool),
}

impl LegendItem {
    fn text(&self) -> String {
        match self {
            LegendItem::Bottleneck(name, _) => format!("limited by {name}"),
            LegendItem::Latency => "p99 latency".into(),
            LegendItem::Shape(true) => "the story's shape, as expected".into(),
            LegendItem::Shape(false) => "not the story's shape (journey.md says why)".into(),
        }
    }

    /// The swatch and the gap after it.
    fn swatch(&self) -> i32 {
        match self {
            LegendItem::Shape(_) => 48,
            _ => 26,
        }
    }

    /// The swatch, the text and the space before the next item.
    fn width(&self) -> i32 {
        self.swatch() + text_width(&self.text(), 11.0) as i32 + 22
    }
}

fn legend_items(bars: &[Bar]) -> Vec<LegendItem> {
    let mut names: Vec<&str> = Vec::new();
    for b in bars {
        if !names.contains(&b.stage.bottleneck.as_str()) {
            names.push(&b.stage.bottleneck);
        }
    }
    // Components in their usual order, then any other name as it came.
    let rank = |n: &&str| {
        Component::ALL
            .iter()
            .position(|c| c.name() == *n)
            .unwrap_or(Component::ALL.len())
    };
    names.sort_by_key(rank);
    let mut items: Vec<LegendItem> = names
        .into_iter()
        .map(|n| LegendItem::Bottleneck(n.to_string(), colour(Component::from_name(n))))
        .collect();
    if !bars.is_empty() {
        items.push(LegendItem::Latency);
    }
    for holds in [true, false] {
        if bars
            .iter()
            .any(|b| b.stage.shape.as_ref().is_some_and(|s| s.holds == holds))
        {
            items.push(LegendItem::Shape(holds));
        }
    }
    items
}

/// The legend's left edge: under the plot.
const LEGEND_LEFT: i32 = (MARGIN + AXIS_AREA) as i32;

/// Lay the legend out in rows that fit the width: (item, x, row).
fn legend_layout(items: &[LegendItem]) -> Vec<(&LegendItem, i32, i32)> {
    let (mut x, mut row) = (0, 0);
    let room = WIDTH as i32 - LEGEND_LEFT - MARGIN as i32;
    items
        .iter()
        .map(|item| {
            if x > 0 && x + item.width() > room {
                (x, row) = (0, row + 1);
            }
            let at = (item, x, row);
            x += item.width();
            at
        })
        .collect()
}

fn legend_rows(items: &[LegendItem]) -> i32 {
    legend_layout(items).last().map_or(0, |(_, _, row)| row + 1)
}

fn draw_legend(area: &Area, items: &[LegendItem]) -> DrawResult {
    for (item, x, row) in legend_layout(items) {
        let (x, y) = (LEGEND_LEFT + x, 4 + row * LEGEND_ROW + LEGEND_ROW / 2);
        match item {
            LegendItem::Bottleneck(_, c) => {
                area.draw(&Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.filled()))?;
            }
            LegendItem::Latency => {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 18, y)],
                    LATENCY.stroke_width(2),
                ))?;
                area.draw(&Circle::new((x + 9, y), 4, LATENCY.filled()))?;
            }
            LegendItem::Shape(holds) => {
                let (word, c) = if *holds {
                    ("holds", HOLDS)
                } else {
                    ("FAILS", FAILS)
                };
                area.draw(&Text::new(
                    word,
                    (x + 20, y),
                    bold(11.0)
                        .color(&c)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
            }
        }
        area.draw(&Text::new(
            item.text(),
            (x + item.swatch(), y),
            font(11.0).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// The requests/s axis: from 0 to a round top, ticks every 1, 2 or 5 x 10^n.
struct RpsAxis {
    step: f64,
    top: f64,
    ticks: usize,
}

impl RpsAxis {
    fn new(max: f64) -> RpsAxis {
        let step = nice_step(max.max(1.0) / 5.0);
        // Room above the tallest bar for its value.
        let ticks = ((max * 1.08) / step).ceil().max(1.0) as usize;
        RpsAxis {
            step,
            top: step * ticks as f64,
            ticks: ticks + 1,
        }
    }

    fn label(&self, v: f64) -> String {
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        thousands(v, decimals)
    }

    /// A bar's value: whole requests/s, or one decimal under 10.
    fn value(&self, v: f64) -> String {
        thousands(v, if v < 10.0 { 1 } else { 0 })
    }
}

/// The smallest 1, 2 or 5 x 10^n at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let decade = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * decade)
}

/// `v` with `decimals` decimals and a comma between thousands: "12,500".
fn thousands(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// The p99 latency axis, in milliseconds on a log scale: from the decade at or below the
/// fastest stage to at least a decade above it and well above the slowest, a tick per decade.
struct LatencyAxis {
    bottom: f64,
    top: f64,
    ticks: usize,
}

impl LatencyAxis {
    fn new(p99_ms: impl Iterator<Item = f64>) -> LatencyAxis {
        let (min, max) = p99_ms.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (min, max) = if max <= 0.0 { (1.0, 1.0) } else { (min, max) };
        let first = min.log10().floor();
        // Half a decade of room above the slowest point, for its label.
        let last_exp = (max * 3.0).log10().max(first + 1.0);
        let decades = last_exp.floor() - first;
        LatencyAxis {
            // Just outside the decades, so that rounding cannot drop the first or last tick.
            bottom: 10f64.powf(first) * 0.999,
            top: 10f64.powf(last_exp) * 1.001,
            ticks: decades as usize + 1,
        }
    }

    /// A decade's tick: "10 µs", "1 ms", "100 ms", "10 s".
    fn label(ms: f64) -> String {
        let exp = ms.log10().round() as i32;
        match exp {
            ..=-1 => format!("{} µs", 10i64.pow((exp + 3).max(0) as u32)),
            0..=2 => format!("{} ms", 10i64.pow(exp as u32)),
            _ => format!("{} s", thousands(10f64.powi(exp - 3), 0)),
        }
    }

    /// A stage's p99: "0.45 ms", "93 ms", "1.2 s", "10.0 s".
    fn value(ms: f64) -> String {
        match ms {
            ..1.0 => format!("{ms:.2} ms"),
            ..10.0 => format!("{ms:.1} ms"),
            ..1000.0 => format!("{ms:.0} ms"),
            _ => format!("{:.1} s", ms / 1000.0),
        }
    }
}

/// `text` in at most `max_lines` lines of at most `room` pixels, breaking between words; the
/// last line ends in "…" when the text does not fit.
fn wrap(text: &str, room: f64, px: f64, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}"), px) <= room => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    if lines.len() > max_lines {
        let rest = lines.split_off(max_lines - 1).join(" ");
        lines.push(format!("{rest}\u{2026}"));
    }
    lines.into_iter().map(|l| truncate(&l, room, px)).collect()
}

/// `text`, cut with "…" to fit `room` pixels.
fn truncate(text: &str, room: f64, px: f64) -> String {
    if text_width(text, px) <= room {
        return text.to_string();
    }
    let keep = ((room / (px * 0.58)) as usize).saturating_sub(1).max(1);
    let cut: String = text.chars().take(keep).collect();
    format!("{}\u{2026}", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::sample_report;
    use super::*;

    #[test]
    fn a_timeout_gets_its_decade_and_every_stage_its_bottleneck_and_shape() {
        let mut report = sample_report();
        let timed_out = report.stages[2].load.as_mut().unwrap();
        timed_out.latency.p99_us = 10_002_431;
        let svg = svg(&report).unwrap();
        let texts: Vec<&str> = svg
            .split("</text>")
            .filter_map(|t| t.rsplit_once('>').map(|(_, text)| text.trim()))
            .collect();
        for expected in [
            "100 ms",
            "1 s",
            "10 s",
            "189 ms",
            "10.0 s",
            "limit: database",
            "limit: nginx, unbudgeted",
            "shape FAILS",
            "limited by nginx",
            "846",
        ] {
            assert!(texts.contains(&expected), "{expected:?} not in {texts:?}");
        }
        assert_eq!(
            svg,
            super::svg(&report).unwrap(),
            "the same report, the same bytes"
        );
    }

    #[test]
    fn requests_per_second_ticks_are_round() {
        assert_eq!(nice_step(1253.4 / 5.0), 500.0);
        assert_eq!(nice_step(6444.1 / 5.0), 2000.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(100.0), 100.0);
        let axis = RpsAxis::new(6444.1);
        assert_eq!((axis.step, axis.top, axis.ticks), (2000.0, 8000.0, 5));
        assert_eq!(axis.label(8000.0), "8,000");
        assert_eq!(thousands(1234567.0, 0), "1,234,567");
        assert_eq!(thousands(0.5, 1), "0.5");
    }

    #[test]
    fn latency_ticks_are_decades_and_a_timeout_does_not_flatten_the_rest() {
        let axis = LatencyAxis::new([63.9, 105.1, 10_002.4].into_iter());
        assert!(axis.bottom < 10.0 && axis.bottom > 9.9);
        assert!(axis.top > 30_000.0);
        assert_eq!(axis.ticks, 4, "10 ms, 100 ms, 1 s and 10 s");
        let labels: Vec<String> = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0]
            .into_iter()
            .map(LatencyAxis::label)
            .collect();
        assert_eq!(
            labels,
            ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s", "10 s"]
        );
        let one = LatencyAxis::new([42.0].into_iter());
        assert_eq!(one.ticks, 2, "at least two decades: 10 ms and 100 ms");
    }

    #[test]
    fn long_names_wrap_and_are_cut_to_fit() {
        assert_eq!(
            wrap("6 APIs, untuned nginx", 90.0, 11.0, 2),
            ["6 APIs,", "untuned nginx"]
        );
        let lines = wrap("a very long stage name that goes on", 60.0, 11.0, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| text_width(l, 11.0) <= 60.0));
        assert!(lines[1].ends_with('\u{2026}'));
    }
}
