//! A vt100 screen drawn into a PNG as a terminal would show it: every cell's
//! background, its character in DejaVu Sans Mono (bold where the cell is bold)
//! in its foreground colour. Box drawing, block elements and Braille (the world
//! map) are drawn as shapes filling the cell, the way terminals such as kitty
//! do, so lines join and the map's dots line up whatever the font has.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use ab_glyph::{Font, FontArc, PxScale, ScaleFont, point};
use anyhow::Context;

/// The terminal's own colours where a cell asks for the default: the dark
/// theme's text on its surface (Nord), as a dark terminal would have them.
const DEFAULT_FG: Rgb = [0xd8, 0xde, 0xe9];
const DEFAULT_BG: Rgb = [0x2e, 0x34, 0x40];
/// Cell width in pixels; the font is scaled so its advance is exactly this.
const CELL_W: u32 = 10;

type Rgb = [u8; 3];

/// The fonts, tried in order for a character: monospace (bold first for bold
/// cells), then DejaVu Sans for the odd symbol the monospace face lacks.
#[derive(Debug)]
pub struct Fonts {
    regular: FontArc,
    bold: FontArc,
    fallback: Option<FontArc>,
    scale: PxScale,
    ascent: f32,
    cell_h: u32,
}

fn load(path: &Path) -> anyhow::Result<FontArc> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    FontArc::try_from_vec(bytes).with_context(|| format!("{} is not a font", path.display()))
}

impl Fonts {
    /// DejaVu Sans Mono (and Bold, and DejaVu Sans if present) from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Fonts> {
        let regular = load(&dir.join("DejaVuSansMono.ttf"))?;
        let bold = load(&dir.join("DejaVuSansMono-Bold.ttf"))?;
        let fallback = load(&dir.join("DejaVuSans.ttf")).ok();
        let m = regular.glyph_id('M');
        let advance = regular.h_advance_unscaled(m);
        anyhow::ensure!(advance > 0.0, "the monospace font has no width for M");
        // PxScale is the pixel height of ascent - descent.
        let height = CELL_W as f32 * regular.height_unscaled() / advance;
        let scale = PxScale::from(height);
        let ascent = regular.as_scaled(scale).ascent();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a few pixels
        let cell_h = height.ceil() as u32;
        Ok(Fonts {
            regular,
            bold,
            fallback,
            scale,
            ascent,
            cell_h,
        })
    }

    /// The first font that has `c`, bold cells preferring the bold face.
    fn font_for(&self, c: char, bold: bool) -> Option<&FontArc> {
        let order = if bold {
            [
                Some(&self.bold),
                Some(&self.regular),
                self.fallback.as_ref(),
            ]
        } else {
            [
                Some(&self.regular),
                Some(&self.bold),
                self.fallback.as_ref(),
            ]
        };
        order.into_iter().flatten().find(|f| f.glyph_id(c).0 != 0)
    }
}

/// The xterm colour of palette index `i`.
fn indexed(i: u8) -> Rgb {
    const BASE: [Rgb; 16] = [
        [0x00, 0x00, 0x00],
        [0xcd, 0x00, 0x00],
        [0x00, 0xcd, 0x00],
        [0xcd, 0xcd, 0x00],
        [0x00, 0x00, 0xee],
        [0xcd, 0x00, 0xcd],
        [0x00, 0xcd, 0xcd],
        [0xe5, 0xe5, 0xe5],
        [0x7f, 0x7f, 0x7f],
        [0xff, 0x00, 0x00],
        [0x00, 0xff, 0x00],
        [0xff, 0xff, 0x00],
        [0x5c, 0x5c, 0xff],
        [0xff, 0x00, 0xff],
        [0x00, 0xff, 0xff],
        [0xff, 0xff, 0xff],
    ];
    match i {
        0..=15 => BASE[usize::from(i)],
        16..=231 => {
            let n = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
            [level(n / 36), level((n / 6) % 6), level(n % 6)]
        }
        _ => {
            let v = 8 + 10 * (i - 232);
            [v, v, v]
        }
    }
}

fn colour(c: vt100::Color, default: Rgb) -> Rgb {
    match c {
        vt100::Color::Default => default,
        vt100::Color::Idx(i) => indexed(i),
        vt100::Color::Rgb(r, g, b) => [r, g, b],
    }
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // within 0..=255
    let ch = |x: u8, y: u8| (f32::from(x) * (1.0 - t) + f32::from(y) * t).round() as u8;
    [ch(a[0], b[0]), ch(a[1], b[1]), ch(a[2], b[2])]
}

/// An RGB canvas that blends with coverage rounded to `levels` steps, so the
/// picture keeps few colours and fits a palette PNG.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<Rgb>,
    levels: u32,
}

impl Canvas {
    fn blend(&mut self, x: i64, y: i64, colour: Rgb, coverage: f32) {
        let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
            return;
        };
        if x >= self.width || y >= self.height || coverage <= 0.0 {
            return;
        }
        let steps = (self.levels - 1) as f32;
        let q = (coverage.min(1.0) * steps).round() / steps;
        if q <= 0.0 {
            return;
        }
        let i = (y * self.width + x) as usize;
        self.pixels[i] = mix(self.pixels[i], colour, q);
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.blend(x, y, colour, 1.0);
            }
        }
    }
}

/// Up, right, down, left: 0 none, 1 light, 2 heavy, 3 double.
fn box_arms(c: char) -> Option<[u8; 4]> {
    Some(match c {
        '─' | '╌' | '┄' | '┈' => [0, 1, 0, 1],
        '│' | '╎' | '┆' | '┊' => [1, 0, 1, 0],
        '┌' | '╭' => [0, 1, 1, 0],
        '┐' | '╮' => [0, 0, 1, 1],
        '└' | '╰' => [1, 1, 0, 0],
        '┘' | '╯' => [1, 0, 0, 1],
        '├' => [1, 1, 1, 0],
        '┤' => [1, 0, 1, 1],
        '┬' => [0, 1, 1, 1],
        '┴' => [1, 1, 0, 1],
        '┼' => [1, 1, 1, 1],
        '━' => [0, 2, 0, 2],
        '┃' => [2, 0, 2, 0],
        '┏' => [0, 2, 2, 0],
        '┓' => [0, 0, 2, 2],
        '┗' => [2, 2, 0, 0],
        '┛' => [2, 0, 0, 2],
        '┣' => [2, 2, 2, 0],
        '┫' => [2, 0, 2, 2],
        '┳' => [0, 2, 2, 2],
        '┻' => [2, 2, 0, 2],
        '╋' => [2, 2, 2, 2],
        '═' => [0, 3, 0, 3],
        '║' => [3, 0, 3, 0],
        '╔' => [0, 3, 3, 0],
        '╗' => [0, 0, 3, 3],
        '╚' => [3, 3, 0, 0],
        '╝' => [3, 0, 0, 3],
        '╠' => [3, 3, 3, 0],
        '╣' => [3, 0, 3, 3],
        '╦' => [0, 3, 3, 3],
        '╩' => [3, 3, 0, 3],
        '╬' => [3, 3, 3, 3],
        '╴' => [0, 0, 0, 1],
        '╵' => [1, 0, 0, 0],
        '╶' => [0, 1, 0, 0],
        '╷' => [0, 0, 1, 0],
        _ => return None,
    })
}

/// Lines from the cell's middle to the edges named by `arms`.
fn draw_box(cv: &mut Canvas, x0: i64, y0: i64, w: i64, h: i64, arms: [u8; 4], fg: Rgb) {
    let light = (w / 10).max(1);
    let heavy = light * 3;
    let gap = light + 1;
    let (cx, cy) = (x0 + w / 2, y0 + h / 2);
    let [up, right, down, left] = arms;
    // Strokes reach past the middle by half the thickest one, so corners close.
    let thick = |a: u8| match a {
        2 => heavy,
        3 => gap * 2 + light,
        _ => light,
    };
    let reach = arms.iter().map(|&a| thick(a)).max().unwrap_or(light) / 2 + 1;
    // (offset from the centre line, thickness) of each stroke of an arm.
    let strokes = |a: u8| -> Vec<(i64, i64)> {
        match a {
            0 => vec![],
            2 => vec![(-heavy / 2, heavy)],
            3 => vec![(-gap - light / 2, light), (gap - light / 2, light)],
            _ => vec![(-light / 2, light)],
        }
    };
    for (off, t) in strokes(up) {
        cv.rect(cx + off, y0, cx + off + t, cy + reach, fg);
    }
    for (off, t) in strokes(down) {
        cv.rect(cx + off, cy - reach + 1, cx + off + t, y0 + h, fg);
    }
    for (off, t) in strokes(left) {
        cv.rect(x0, cy + off, cx + reach, cy + off + t, fg);
    }
    for (off, t) in strokes(right) {
        cv.rect(cx - reach + 1, cy + off, x0 + w, cy + off + t, fg);
    }
}

/// Block elements (U+2580..U+259F): sparklines, bars, the text cursor.
fn draw_block(cv: &mut Canvas, x0: i64, y0: i64, w: i64, h: i64, c: char, fg: Rgb) -> bool {
    let code = u32::from(c);
    let eighth_h = |n: i64| (h * n + 4) / 8;
    let eighth_w = |n: i64| (w * n + 4) / 8;
    match code {
        0x2580 => cv.rect(x0, y0, x0 + w, y0 + h / 2, fg),
        0x2581..=0x2588 => {
            let n = i64::from(code - 0x2580);
            cv.rect(x0, y0 + h - eighth_h(n), x0 + w, y0 + h, fg);
        }
        0x2589..=0x258f => {
            let n = 8 - i64::from(code - 0x2588);
            cv.rect(x0, y0, x0 + eighth_w(n), y0 + h, fg);
        }
        0x2590 => cv.rect(x0 + w / 2, y0, x0 + w, y0 + h, fg),
        0x2591..=0x2593 => {
            let share = (code - 0x2590) as f32 / 4.0;
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    cv.blend(x, y, fg, share);
                }
            }
        }
        0x2594 => cv.rect(x0, y0, x0 + w, y0 + eighth_h(1), fg),
        0x2595 => cv.rect(x0 + w - eighth_w(1), y0, x0 + w, y0 + h, fg),
        0x2596..=0x259f => {
            // Quadrants: upper left, upper right, lower left, lower right.
            let quads: [u8; 10] = [
                0b0010, 0b0001, 0b1000, 0b1011, 0b1001, 0b1110, 0b1101, 0b0100, 0b0110, 0b0111,
            ];
            let q = quads[(code - 0x2596) as usize];
            let (hw, hh) = (w / 2, h / 2);
            if q & 0b1000 != 0 {
                cv.rect(x0, y0, x0 + hw, y0 + hh, fg);
            }
            if q & 0b0100 != 0 {
                cv.rect(x0 + hw, y0, x0 + w, y0 + hh, fg);
            }
            if q & 0b0010 != 0 {
                cv.rect(x0, y0 + hh, x0 + hw, y0 + h, fg);
            }
            if q & 0b0001 != 0 {
                cv.rect(x0 + hw, y0 + hh, x0 + w, y0 + h, fg);
            }
        }
        _ => return false,
    }
    true
}

/// Braille (U+2800..U+28FF): round dots on a 2 × 4 grid filling the cell.
fn draw_braille(cv: &mut Canvas, x0: i64, y0: i64, w: i64, h: i64, bits: u32, fg: Rgb) {
    // Bit → (column, row), as Unicode numbers the dots.
    const DOTS: [(u8, u8); 8] = [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
        (0, 3),
        (1, 3),
    ];
    let (w, h) = (w as f32, h as f32);
    let r = (w / 4.0).min(h / 8.0) * 0.62;
    for (bit, (col, row)) in DOTS.iter().enumerate() {
        if bits & (1 << bit) == 0 {
            continue;
        }
        let cx = x0 as f32 + w * (0.25 + 0.5 * f32::from(*col));
        let cy = y0 as f32 + h * (0.125 + 0.25 * f32::from(*row));
        #[allow(clippy::cast_possible_truncation)] // pixel coordinates
        let (xa, xb, ya, yb) = (
            (cx - r - 1.0).floor() as i64,
            (cx + r + 1.0).ceil() as i64,
            (cy - r - 1.0).floor() as i64,
            (cy + r + 1.0).ceil() as i64,
        );
        for y in ya..=yb {
            for x in xa..=xb {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                cv.blend(x, y, fg, r + 0.5 - d);
            }
        }
    }
}

/// The screen drawn with coverage in `levels` steps; also the characters no
/// font had (drawn as an empty box).
fn paint(screen: &vt100::Screen, fonts: &Fonts, levels: u32) -> (Canvas, BTreeSet<char>) {
    let (rows, cols) = screen.size();
    let (rows, cols) = (rows.get(), cols.get());
    let (w, h) = (CELL_W, fonts.cell_h);
    let mut cv = Canvas {
        width: u32::from(cols) * w,
        height: u32::from(rows) * h,
        pixels: vec![DEFAULT_BG; (u32::from(cols) * w * u32::from(rows) * h) as usize],
        levels,
    };
    let mut missing = BTreeSet::new();
    let (w, h) = (i64::from(w), i64::from(h));
    // The colours of a cell, after reverse video and dimming.
    let colours = |cell: &vt100::Cell| {
        let mut fg = colour(cell.fgcolor(), DEFAULT_FG);
        let mut bg = colour(cell.bgcolor(), DEFAULT_BG);
        if cell.inverse() {
            std::mem::swap(&mut fg, &mut bg);
        }
        if cell.dim() {
            fg = mix(fg, bg, 0.4);
        }
        (fg, bg)
    };
    // Backgrounds first: a glyph may reach into the next cell.
    for row in 0..rows {
        for col in 0..cols {
            if let Some(cell) = screen.cell(row, col) {
                let (_, bg) = colours(cell);
                let (x0, y0) = (i64::from(col) * w, i64::from(row) * h);
                cv.rect(x0, y0, x0 + w, y0 + h, bg);
            }
        }
    }
    let baseline_pad = ((h as f32) - fonts.scale.y) / 2.0;
    for row in 0..rows {
        for col in 0..cols {
            let Some(cell) = screen.cell(row, col) else {
                continue;
            };
            if cell.is_wide_continuation() {
                continue;
            }
            let Some(c) = cell.contents().chars().next() else {
                continue;
            };
            if c == ' ' {
                continue;
            }
            let (fg, _) = colours(cell);
            let (x0, y0) = (i64::from(col) * w, i64::from(row) * h);
            let span = if cell.is_wide() { 2 * w } else { w };
            if let Some(arms) = box_arms(c) {
                draw_box(&mut cv, x0, y0, span, h, arms, fg);
                continue;
            }
            if draw_block(&mut cv, x0, y0, span, h, c, fg) {
                continue;
            }
            if let 0x2800..=0x28ff = u32::from(c) {
                draw_braille(&mut cv, x0, y0, span, h, u32::from(c) - 0x2800, fg);
                continue;
            }
            let Some(font) = fonts.font_for(c, cell.bold()) else {
                missing.insert(c);
                let t = (w / 10).max(1);
                cv.rect(x0 + 1, y0 + 2, x0 + span - 1, y0 + 2 + t, fg);
                cv.rect(x0 + 1, y0 + h - 2 - t, x0 + span - 1, y0 + h - 2, fg);
                cv.rect(x0 + 1, y0 + 2, x0 + 1 + t, y0 + h - 2, fg);
                cv.rect(x0 + span - 1 - t, y0 + 2, x0 + span - 1, y0 + h - 2, fg);
                continue;
            };
            let id = font.glyph_id(c);
            let scaled = font.as_scaled(fonts.scale);
            // A wider glyph from the fallback font is centred on its cells.
            let advance = scaled.h_advance(id);
            let x = x0 as f32 + ((span as f32 - advance) / 2.0).max(0.0);
            let y = y0 as f32 + baseline_pad + fonts.ascent;
            let glyph = id.with_scale_and_position(fonts.scale, point(x, y));
            if let Some(outline) = font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                #[allow(clippy::cast_possible_truncation)] // pixel coordinates
                let (bx, by) = (bounds.min.x as i64, bounds.min.y as i64);
                outline.draw(|gx, gy, coverage| {
                    cv.blend(bx + i64::from(gx), by + i64::from(gy), fg, coverage);
                });
            }
        }
    }
    (cv, missing)
}

/// Writes `screen` as a PNG at `path`: a palette PNG when the picture has at
/// most 256 colours (coarser anti-aliasing until it does), else RGB. Returns
/// the characters no font could draw.
pub fn write_png(screen: &vt100::Screen, fonts: &Fonts, path: &Path) -> anyhow::Result<Vec<char>> {
    let mut levels = 16;
    let (canvas, missing, palette) = loop {
        let (canvas, missing) = paint(screen, fonts, levels);
        let mut palette: HashMap<Rgb, u8> = HashMap::new();
        let mut fits = true;
        for p in &canvas.pixels {
            if !palette.contains_key(p) {
                let Ok(i) = u8::try_from(palette.len()) else {
                    fits = false;
                    break;
                };
                palette.insert(*p, i);
            }
        }
        if fits {
            break (canvas, missing, Some(palette));
        }
        if levels <= 4 {
            // Too colourful for a palette: full anti-aliasing in RGB.
            let (canvas, missing) = paint(screen, fonts, 256);
            break (canvas, missing, None);
        }
        levels /= 2;
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), canvas.width, canvas.height);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    let data: Vec<u8> = match &palette {
        Some(palette) => {
            let mut table = vec![0u8; palette.len() * 3];
            for (rgb, &i) in palette {
                let i = usize::from(i) * 3;
                table[i..i + 3].copy_from_slice(rgb);
            }
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_palette(table);
            canvas.pixels.iter().map(|p| palette[p]).collect()
        }
        None => {
            encoder.set_color(png::ColorType::Rgb);
            canvas.pixels.iter().flatten().copied().collect()
        }
    };
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&data)?;
    writer.finish()?;
    Ok(missing.into_iter().collect())
}
