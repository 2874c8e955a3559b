//! Draws the benchmark pictures: reads `docs/data/*.csv`, writes SVGs under `docs/plots/`.
//!
//! ```text
//! cargo run --release --example plots
//! cargo run --release --example plots -- --data DIR --out DIR   # other folders
//! ```
//!
//! * `throughput*.csv` (rows `machine,workload,zipf,read_pct,threads,contender,mops`, written by
//!   `showdown --only throughput|sweep --csv PATH`): Mops/s against threads, one line per
//!   contender, one picture per machine and workload (`throughput-<machine>-<workload>.svg`),
//!   plus, for the get/put grid, all its cells side by side (`throughput-<machine>-grid.svg`).
//! * `hit_ratio.csv` (rows `trace,capacity,policy,hit_pct`): hit ratio against capacity, one
//!   line per policy, one picture per trace (`hit_ratio-<trace>.svg`).
//! * `memory.csv` (rows `contender,entries,bytes_per_entry`, written by
//!   `showdown --only memory --csv PATH`): heap bytes per entry, one bar per contender
//!   (`memory.svg`).
//!
//! A missing or unreadable file is reported in one line and its pictures are skipped. Columns
//! are found by their header names, so their order does not matter.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Res<T = ()> = Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: plots [--data DIR] [--out DIR]   (default: docs/data, docs/plots)";

fn main() -> std::process::ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut data, mut out) = (root.join("docs/data"), root.join("docs/plots"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--data", Some(d)) => data = PathBuf::from(d),
            ("--out", Some(o)) => out = PathBuf::from(o),
            _ => {
                eprintln!("{USAGE}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("plots: cannot create {}: {e}", out.display());
        return std::process::ExitCode::FAILURE;
    }
    let mut written = 0;
    for (what, result) in [
        ("throughput", throughput(&data, &out)),
        ("hit ratio", hit_ratio(&data, &out)),
        ("memory", memory(&data, &out)),
    ] {
        match result {
            Ok(n) => written += n,
            Err(e) => println!("{what}: skipped ({e})"),
        }
    }
    println!("wrote {written} SVGs under {}", out.display());
    std::process::ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// A CSV file: the header's column positions and the data rows (fields never hold commas).
struct Table {
    path: PathBuf,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn read(path: &Path) -> Res<Table> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .ok_or_else(|| format!("{}: empty", path.display()))?;
        let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
        let rows = lines
            .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
            .collect();
        Ok(Table {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    /// The index of column `name`, or an error naming the file.
    fn col(&self, name: &str) -> Res<usize> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("{}: no column {name:?}", self.path.display()).into())
    }

    /// Rows with `n` fields; says how many others were skipped.
    fn rows_checked(&self) -> impl Iterator<Item = &Vec<String>> {
        let n = self.columns.len();
        let bad = self.rows.iter().filter(|r| r.len() != n).count();
        if bad > 0 {
            println!(
                "{}: skipped {bad} rows without {n} fields",
                self.path.display()
            );
        }
        self.rows.iter().filter(move |r| r.len() == n)
    }
}

fn num(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A file name part: lower-case letters, digits, `.` and `-` only.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

// ---------------------------------------------------------------------------------------------
// Colours and lines
// ---------------------------------------------------------------------------------------------

/// One colour per contender or policy, the same in every picture.
fn color(name: &str, i: usize) -> RGBColor {
    match name {
        "clockline" => RGBColor(214, 39, 40),
        "quick_cache" => RGBColor(31, 119, 180),
        "moka" => RGBColor(44, 160, 44),
        "lru+mutex" | "LRU" | "lru" => RGBColor(255, 127, 14),
        "papaya" => RGBColor(148, 103, 189),
        "papaya-presized" => RGBColor(197, 176, 213),
        "OPT" | "opt" => RGBColor(0, 0, 0),
        // clockline's feature variants (clockline+ttl, ...): its red, lighter or darker.
        n if n.starts_with("clockline") => [RGBColor(240, 128, 128), RGBColor(140, 20, 20)][i % 2],
        _ => {
            let extra = [
                RGBColor(140, 86, 75),
                RGBColor(227, 119, 194),
                RGBColor(127, 127, 127),
                RGBColor(188, 189, 34),
                RGBColor(23, 190, 207),
            ];
            extra[i % extra.len()]
        }
    }
}

/// Named lines of (x, y) points, in legend order.
type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// Width of the legend column to the right of a plot, in pixels.
const LEGEND_W: u32 = 150;

/// How the x axis is scaled.
#[derive(Clone, Copy, PartialEq)]
enum XScale {
    Linear,
    /// Logarithmic with this base (2 for thread counts, 10 for capacities).
    Log(f64),
}

/// Lines with points on a plot whose x ticks sit at the x values of the data (thinned where
/// they would overlap), with the legend in a column on the right unless `legend` is false.
struct LinePlot<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_scale: XScale,
    /// The y axis never goes above this (100 for percentages).
    y_cap: Option<f64>,
    /// Font size of the title; the rest scale with it.
    font: u32,
    legend: bool,
}

impl LinePlot<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, lines: &Lines) -> Res
    where
        DB::ErrorType: 'static,
    {
        let mut xs: Vec<f64> = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let (Some(&x_min), Some(&x_max)) = (xs.first(), xs.last()) else {
            return Err("no points".into());
        };
        let y_max = lines
            .iter()
            .flat_map(|l| l.1.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        let mut y_top = if y_max > 0.0 { y_max * 1.08 } else { 1.0 };
        if let Some(cap) = self.y_cap {
            y_top = y_top.min(cap);
        }
        let plot_area = if self.legend {
            let (w, _) = area.dim_in_pixel();
            let (plot, legend) = area.split_horizontally(w.saturating_sub(LEGEND_W));
            draw_legend(&legend, lines, self.font)?;
            plot
        } else {
            area.clone()
        };
        let f = self.font;
        let mut builder = ChartBuilder::on(&plot_area);
        builder
            .caption(self.title, ("sans-serif", f))
            .margin(f / 2)
            .x_label_area_size(f * 2 + 8)
            .y_label_area_size(f * 3);
        match self.x_scale {
            XScale::Log(base) if x_max > x_min => {
                let range = (x_min / 1.12)..(x_max * 1.12);
                let chart = builder.build_cartesian_2d(range.log_scale().base(base), 0.0..y_top)?;
                self.finish(chart, &plot_area, lines, &xs)
            }
            _ => {
                let pad = ((x_max - x_min) * 0.05).max(0.25);
                let range = (x_min - pad)..(x_max + pad);
                let chart = builder.build_cartesian_2d(range, 0.0..y_top)?;
                self.finish(chart, &plot_area, lines, &xs)
            }
        }
    }

    /// Axes, x grid lines and tick labels at `ticks`, and the lines.
    fn finish<DB, X>(
        &self,
        mut chart: ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>,
        area: &DrawingArea<DB, Shift>,
        lines: &Lines,
        ticks: &[f64],
    ) -> Res
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let f = self.font;
        let label = ("sans-serif", f * 7 / 10);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            // Log axes draw a few labels whatever `x_labels` says; the ticks come below.
            .x_label_formatter(&|_| String::new())
            .y_labels(8)
            .y_label_formatter(&|y| short(*y))
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .label_style(label)
            .axis_desc_style(label)
            .light_line_style(BLACK.mix(0.03))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;
        // Ticks at the data's x values, skipping any that would crowd the previous label.
        let (_, y_range) = (chart.x_range(), chart.y_range());
        let base = area.get_base_pixel();
        let mut last: Option<i32> = None;
        for &x in ticks {
            let (px, py) = chart.backend_coord(&(x, y_range.start));
            let text = short(x);
            let width = (text.len() as u32 * f * 45 / 100) as i32 + (f as i32) / 2;
            if last.is_some_and(|l| px - l < width) {
                continue;
            }
            last = Some(px);
            chart.draw_series(LineSeries::new(
                [(x, y_range.start), (x, y_range.end)],
                BLACK.mix(0.12),
            ))?;
            let style = TextStyle::from(label).pos(Pos::new(HPos::Center, VPos::Top));
            area.draw(&Text::new(
                text,
                (px - base.0, py - base.1 + (f as i32) / 4),
                style,
            ))?;
        }
        for (i, (name, pts)) in lines.iter().enumerate() {
            let c = color(name, i);
            let width = if name == "clockline" { 3 } else { 2 };
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(width)))?;
            let r = (f / 6).max(2);
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, r, c.filled())))?;
        }
        Ok(())
    }
}

/// The legend: one short line and name per line, from the top of `area`.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, lines: &Lines, font: u32) -> Res
where
    DB::ErrorType: 'static,
{
    let step = (font * 11 / 10) as i32;
    let text = ("sans-serif", font * 7 / 10).into_text_style(area);
    let top = (font * 3) as i32;
    for (i, (name, _)) in lines.iter().enumerate() {
        let y = top + i as i32 * step;
        let c = color(name, i);
        let width = if name == "clockline" { 3 } else { 2 };
        area.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            c.stroke_width(width),
        ))?;
        area.draw(&Circle::new((16, y), (font / 6).max(2), c.filled()))?;
        area.draw(&Text::new(
            name.clone(),
            (34, y),
            text.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// A number as an axis label: no trailing zeros, thousands as `k`.
fn short(x: f64) -> String {
    if x >= 10_000.0 && (x / 1000.0).fract().abs() < 1e-9 {
        format!("{}k", x / 1000.0)
    } else if (x.round() - x).abs() < 1e-9 {
        format!("{}", x.round())
    } else {
        format!("{x:.1}")
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------------------------

/// A workload as the CSV names it: name, Zipf exponent, read share (empty for cache-aside).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WorkloadKey {
    name: String,
    zipf: String,
    read_pct: String,
}

impl WorkloadKey {
    fn title(&self) -> String {
        match self.read_pct.as_str() {
            "" => format!("{} (Zipf {})", self.name, self.zipf),
            r => format!("{} (Zipf {}, {r}% get)", self.name, self.zipf),
        }
    }

    fn file_part(&self) -> String {
        if self.name == "getput" {
            slug(&format!("getput-z{}-r{}", self.zipf, self.read_pct))
        } else {
            slug(&self.name)
        }
    }
}

/// machine -> workload -> contender -> threads -> Mops/s.
type Throughputs = BTreeMap<String, BTreeMap<WorkloadKey, BTreeMap<String, BTreeMap<u64, f64>>>>;

fn throughput(data: &Path, out: &Path) -> Res<usize> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)
        .map_err(|e| format!("{}: {e}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("throughput") && n.ends_with(".csv"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no {}/throughput*.csv", data.display()).into());
    }
    let mut all = Throughputs::new();
    for f in &files {
        let t = match Table::read(f) {
            Ok(t) => t,
            Err(e) => {
                println!("throughput: skipped {e}");
                continue;
            }
        };
        let cols = [
            "machine",
            "workload",
            "zipf",
            "read_pct",
            "threads",
            "contender",
            "mops",
        ]
        .map(|c| t.col(c));
        let [m, w, z, r, th, c, mops] = match cols {
            [Ok(a), Ok(b), Ok(c), Ok(d), Ok(e), Ok(f), Ok(g)] => [a, b, c, d, e, f, g],
            _ => {
                println!(
                    "throughput: skipped {}: header is not {}",
                    f.display(),
                    HEADER
                );
                continue;
            }
        };
        for row in t.rows_checked() {
            let (Some(threads), Some(v)) = (num(&row[th]), num(&row[mops])) else {
                continue;
            };
            let key = WorkloadKey {
                name: row[w].clone(),
                zipf: row[z].clone(),
                read_pct: row[r].clone(),
            };
            all.entry(row[m].clone())
                .or_default()
                .entry(key)
                .or_default()
                .entry(row[c].clone())
                .or_default()
                .insert(threads as u64, v);
        }
    }
    let mut written = 0;
    for (machine, workloads) in &all {
        for (key, contenders) in workloads {
            let lines = to_lines(contenders);
            let path = out.join(format!(
                "throughput-{}-{}.svg",
                slug(machine),
                key.file_part()
            ));
            let area = SVGBackend::new(&path, (800, 520)).into_drawing_area();
            area.fill(&WHITE)?;
            let title = format!("{} — {machine}", key.title());
            LinePlot {
                title: &title,
                x_desc: "threads (log scale)",
                y_desc: "Mops/s (all threads)",
                x_scale: XScale::Log(2.0),
                y_cap: None,
                font: 22,
                legend: true,
            }
            .draw(&area, &lines)?;
            area.present()?;
            written += 1;
        }
        written += grid(machine, workloads, out)?;
    }
    println!(
        "throughput: {written} SVGs from {} file(s), {} machine(s)",
        files.len(),
        all.len()
    );
    Ok(written)
}

const HEADER: &str = "machine,workload,zipf,read_pct,threads,contender,mops";

/// contender -> threads -> value, as lines in report order.
fn to_lines(by_contender: &BTreeMap<String, BTreeMap<u64, f64>>) -> Lines {
    let order = [
        "clockline",
        "quick_cache",
        "moka",
        "lru+mutex",
        "papaya",
        "papaya-presized",
    ];
    let rank = |n: &str| order.iter().position(|o| *o == n).unwrap_or(order.len());
    let mut lines: Lines = by_contender
        .iter()
        .map(|(name, pts)| {
            let pts = pts.iter().map(|(&t, &v)| (t as f64, v)).collect();
            (name.clone(), pts)
        })
        .collect();
    lines.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
    lines
}

/// The get/put grid of one machine in one picture: a row per Zipf exponent, a column per read
/// share. Returns 1 if drawn, 0 if the machine has no grid rows.
type ByWorkload = BTreeMap<WorkloadKey, BTreeMap<String, BTreeMap<u64, f64>>>;

fn grid(machine: &str, workloads: &ByWorkload, out: &Path) -> Res<usize> {
    let cells: Vec<(&WorkloadKey, _)> = workloads
        .iter()
        .filter(|(k, _)| k.name == "getput")
        .collect();
    if cells.len() < 2 {
        return Ok(0);
    }
    let mut zipfs: Vec<&str> = cells.iter().map(|c| c.0.zipf.as_str()).collect();
    zipfs.sort_by(|a, b| {
        num(a)
            .partial_cmp(&num(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    zipfs.dedup();
    let mut reads: Vec<&str> = cells.iter().map(|c| c.0.read_pct.as_str()).collect();
    // Most reads first, as the grid is usually read.
    reads.sort_by(|a, b| {
        num(b)
            .partial_cmp(&num(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    reads.dedup();
    let (w, h) = (
        reads.len() as u32 * 400 + LEGEND_W,
        zipfs.len() as u32 * 320 + 50,
    );
    let path = out.join(format!("throughput-{}-grid.svg", slug(machine)));
    let root = SVGBackend::new(&path, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(50);
    top.titled(
        &format!("get/put grid, Mops/s against threads (rows: Zipf; columns: % get) — {machine}"),
        ("sans-serif", 24),
    )?;
    let (body, legend) = body.split_horizontally(w - LEGEND_W);
    let names: Lines = to_lines(&cells.iter().fold(BTreeMap::new(), |mut all, (_, c)| {
        for name in c.keys() {
            all.insert(name.clone(), BTreeMap::new());
        }
        all
    }));
    draw_legend(&legend, &names, 20)?;
    let panels = body.split_evenly((zipfs.len(), reads.len()));
    for (i, z) in zipfs.iter().enumerate() {
        for (j, r) in reads.iter().enumerate() {
            let key = WorkloadKey {
                name: "getput".into(),
                zipf: z.to_string(),
                read_pct: r.to_string(),
            };
            let Some(by_contender) = workloads.get(&key) else {
                continue;
            };
            let title = format!("Zipf {z}, {r}% get");
            LinePlot {
                title: &title,
                x_desc: "threads (log scale)",
                y_desc: "Mops/s",
                x_scale: XScale::Log(2.0),
                y_cap: None,
                font: 16,
                legend: false,
            }
            .draw(&panels[i * reads.len() + j], &to_lines(by_contender))?;
        }
    }
    root.present()?;
    Ok(1)
}

// ---------------------------------------------------------------------------------------------
// Hit ratio
// ---------------------------------------------------------------------------------------------

fn hit_ratio(data: &Path, out: &Path) -> Res<usize> {
    let path = data.join("hit_ratio.csv");
    if !path.exists() {
        return Err(format!("no {}", path.display()).into());
    }
    let t = Table::read(&path)?;
    let (tr, cap, pol, hit) = (
        t.col("trace")?,
        t.col("capacity")?,
        t.col("policy")?,
        t.col("hit_pct")?,
    );
    // trace (in file order) -> policy (in file order) -> points.
    let mut traces: Vec<(String, Lines)> = Vec::new();
    for row in t.rows_checked() {
        let (Some(c), Some(h)) = (num(&row[cap]), num(&row[hit])) else {
            continue;
        };
        let ti = match traces.iter().position(|x| x.0 == row[tr]) {
            Some(i) => i,
            None => {
                traces.push((row[tr].clone(), Vec::new()));
                traces.len() - 1
            }
        };
        let lines = &mut traces[ti].1;
        match lines.iter_mut().find(|l| l.0 == row[pol]) {
            Some(l) => l.1.push((c, h)),
            None => lines.push((row[pol].clone(), vec![(c, h)])),
        }
    }
    let mut written = 0;
    for (trace, mut lines) in traces {
        for l in &mut lines {
            l.1.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let caps: Vec<f64> = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).collect();
        let (lo, hi) = caps
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let file = out.join(format!("hit_ratio-{}.svg", slug(&trace)));
        let log = lo > 0.0 && hi / lo >= 16.0;
        let area = SVGBackend::new(&file, (800, 520)).into_drawing_area();
        area.fill(&WHITE)?;
        let title = format!("hit ratio: {trace} (single-threaded replay)");
        LinePlot {
            title: &title,
            x_desc: if log {
                "capacity, entries (log scale)"
            } else {
                "capacity, entries"
            },
            y_desc: "hits / requests (%)",
            x_scale: if log {
                XScale::Log(10.0)
            } else {
                XScale::Linear
            },
            y_cap: Some(100.0),
            font: 22,
            legend: true,
        }
        .draw(&area, &lines)?;
        area.present()?;
        written += 1;
    }
    println!("hit ratio: {written} SVGs from {}", path.display());
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

fn memory(data: &Path, out: &Path) -> Res<usize> {
    let path = data.join("memory.csv");
    if !path.exists() {
        return Err(format!("no {}", path.display()).into());
    }
    let t = Table::read(&path)?;
    let (c, b) = (t.col("contender")?, t.col("bytes_per_entry")?);
    let bars: Vec<(String, f64)> = t
        .rows_checked()
        .filter_map(|r| num(&r[b]).map(|v| (r[c].clone(), v)))
        .collect();
    if bars.is_empty() {
        return Err(format!("{}: no rows", path.display()).into());
    }
    let top = bars.iter().map(|x| x.1).fold(0.0f64, f64::max) * 1.15;
    let file = out.join("memory.svg");
    let n = bars.len();
    // Room for each name under its bar.
    let area = SVGBackend::new(&file, ((n as u32 * 130).max(800), 480)).into_drawing_area();
    area.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(
            "heap bytes per entry, u64 -> u64, 1,000,000 inserts (requested bytes)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)?;
    let names: Vec<String> = bars.iter().map(|x| x.0.clone()).collect();
    let label = |x: &f64| -> String {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| short(*y))
        .x_desc("contender")
        .y_desc("bytes per entry")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
        let x = i as f64;
        Rectangle::new([(x - 0.35, 0.0), (x + 0.35, *v)], color(name, i).filled())
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!("{v:.1}"),
            (i as f64 - 0.15, v + top * 0.06),
            ("sans-serif", 15),
        )
    }))?;
    area.present()?;
    println!("memory: 1 SVG from {}", path.display());
    Ok(1)
}
