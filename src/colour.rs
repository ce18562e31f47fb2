//! Colours from outside (the widget's accent, a guide's colour): one parser, shared by the
//! pages, the API and the command line, and the WCAG contrast arithmetic both need.

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#RRGGBB`, `RRGGBB` or `#RGB`.
    pub fn parse(value: &str) -> Option<Rgb> {
        let hex = value.trim().trim_start_matches('#');
        // Checked before slicing by bytes: a multibyte character would split inside itself.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let full = match hex.len() {
            3 => hex.chars().flat_map(|c| [c, c]).collect::<String>(),
            6 => hex.to_owned(),
            _ => return None,
        };
        let byte = |i: usize| u8::from_str_radix(&full[i..i + 2], 16).ok();
        Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
    }

    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// Relative luminance (WCAG 2.1).
    pub fn luminance(self) -> f64 {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(self.0) + 0.7152 * channel(self.1) + 0.0722 * channel(self.2)
    }

    /// Contrast ratio with `other`, from 1 to 21.
    pub fn contrast(self, other: Rgb) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        let (light, dark) = if a > b { (a, b) } else { (b, a) };
        (light + 0.05) / (dark + 0.05)
    }

    /// Black or white, whichever reads better on this colour.
    pub fn text_on(self) -> Rgb {
        if WHITE.contrast(self) >= Rgb(0, 0, 0).contrast(self) {
            WHITE
        } else {
            Rgb(0, 0, 0)
        }
    }

    /// The same hue darkened until it reaches `ratio` against white.
    pub fn darkened_to(self, ratio: f64) -> Rgb {
        let mut colour = self;
        for step in 0..=100 {
            if colour.contrast(WHITE) >= ratio {
                return colour;
            }
            let keep = 1.0 - f64::from(step) / 100.0;
            let scale = |c: u8| (f64::from(c) * keep).round() as u8;
            colour = Rgb(scale(self.0), scale(self.1), scale(self.2));
        }
        Rgb(0, 0, 0)
    }
}

pub const WHITE: Rgb = Rgb(0xff, 0xff, 0xff);
