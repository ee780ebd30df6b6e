//! Text that the built-in PDF fonts can show, and how wide it is.
//!
//! The invoice uses only Helvetica and Helvetica-Bold, two of the 14 standard fonts every
//! PDF reader carries (PDF 32000-1 §9.6.2.2), so no font file is embedded. Those fonts are
//! written with `/WinAnsiEncoding` (Annex D.2), a single-byte code page: a character outside
//! it ("東京") cannot be shown and is replaced with `?` here, before measuring, so what is
//! measured is exactly what is drawn and what a reader extracts.
//!
//! Widths come from the metric-compatible font programs printpdf ships for its built-in
//! fonts, read once per process.

use std::sync::OnceLock;

use printpdf::{BuiltinFont, ParsedFont};

use crate::PdfError;

/// The ellipsis that marks cut text (WinAnsi 0x85).
const ELLIPSIS: char = '\u{2026}';

/// Advance of the space in both Helvetica faces, in em: `C 32 ; WX 278 ; N space` in Adobe's
/// core-14 metrics (Helvetica.afm, Helvetica-Bold.afm).
const SPACE_EM: f32 = 0.278;

/// The two faces the invoice is set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    Regular,
    Bold,
}

impl Face {
    pub(crate) fn builtin(self) -> BuiltinFont {
        match self {
            Face::Regular => BuiltinFont::Helvetica,
            Face::Bold => BuiltinFont::HelveticaBold,
        }
    }
}

/// Advance widths for both faces; built once, then shared.
pub(crate) struct Metrics {
    regular: ParsedFont,
    bold: ParsedFont,
}

impl Metrics {
    /// The process-wide metrics, or [`PdfError::Font`] if printpdf's bundled font programs
    /// cannot be parsed (a packaging fault, not bad input).
    pub(crate) fn get() -> Result<&'static Metrics, PdfError> {
        static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
        METRICS
            .get_or_init(|| {
                Some(Metrics {
                    regular: BuiltinFont::Helvetica.get_parsed_font()?,
                    bold: BuiltinFont::HelveticaBold.get_parsed_font()?,
                })
            })
            .as_ref()
            .ok_or(PdfError::Font)
    }

    /// Width of `text` in points when set in `face` at `size` points. `text` should already
    /// be [`sanitize`]d; a character the font lacks counts as half an em.
    pub(crate) fn width(&self, text: &str, face: Face, size: f32) -> f32 {
        let font = match face {
            Face::Regular => &self.regular,
            Face::Bold => &self.bold,
        };
        let units_per_em = f32::from(font.units_per_em.max(1));
        let em: f32 = text
            .chars()
            .map(|c| match c {
                // The bundled programs map no glyph to the spaces; the standard metrics do.
                ' ' | '\u{a0}' => SPACE_EM,
                _ => {
                    let glyph = if c == '\u{ad}' { '-' } else { c };
                    font.lookup_glyph_index(u32::from(glyph))
                        .and_then(|gid| font.get_glyph_width(gid))
                        .map_or(0.5, |w| f32::from(w) / units_per_em)
                }
            })
            .sum();
        em * size
    }

    /// `text` unchanged if it fits in `max_width`, else its longest prefix that fits with an
    /// ellipsis appended (just the ellipsis, or nothing, if even that is too wide).
    pub(crate) fn truncate(&self, text: &str, face: Face, size: f32, max_width: f32) -> String {
        if self.width(text, face, size) <= max_width {
            return text.to_owned();
        }
        let mut kept = String::new();
        for c in text.chars() {
            kept.push(c);
            kept.push(ELLIPSIS);
            let fits = self.width(&kept, face, size) <= max_width;
            kept.pop();
            if !fits {
                kept.pop();
                break;
            }
        }
        let mut out = kept.trim_end().to_owned();
        out.push(ELLIPSIS);
        if self.width(&out, face, size) <= max_width {
            out
        } else {
            String::new()
        }
    }

    /// `text` broken into lines no wider than `max_width`, at spaces where possible and inside
    /// a word only when the word alone is too wide. At most `max_lines` lines (at least one);
    /// what does not fit is cut with an ellipsis on the last line.
    pub(crate) fn wrap(
        &self,
        text: &str,
        face: Face,
        size: f32,
        max_width: f32,
        max_lines: usize,
    ) -> Vec<String> {
        let fits = |s: &str| self.width(s, face, size) <= max_width;
        let mut lines: Vec<String> = Vec::new();
        let mut current = String::new();
        for word in text.split_whitespace() {
            let candidate = if current.is_empty() {
                word.to_owned()
            } else {
                format!("{current} {word}")
            };
            if fits(&candidate) {
                current = candidate;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            // The word starts a fresh line; split it while it is wider than the column.
            let mut rest = word;
            while !fits(rest) {
                let mut split_at = rest.len();
                for (i, _) in rest.char_indices().skip(1) {
                    if !fits(&rest[..i]) {
                        break;
                    }
                    split_at = i;
                }
                if split_at == rest.len() {
                    // Not even one character fits: keep the first so the loop advances.
                    split_at = rest.chars().next().map_or(rest.len(), char::len_utf8);
                }
                lines.push(rest[..split_at].to_owned());
                rest = &rest[split_at..];
            }
            current = rest.to_owned();
        }
        if !current.is_empty() || lines.is_empty() {
            lines.push(current);
        }

        let max_lines = max_lines.max(1);
        if lines.len() > max_lines {
            let overflow = lines.split_off(max_lines - 1).join(" ");
            // Force the ellipsis even when the joined rest happens to fit.
            let cut = self.truncate(&format!("{overflow}{ELLIPSIS}"), face, size, max_width);
            lines.push(cut);
        }
        lines
    }
}

/// `text` with every character the built-in fonts cannot encode (anything outside Windows-1252,
/// e.g. CJK) replaced by `?`, and control characters (newlines, tabs) by a space.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else if is_win_ansi(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Whether WinAnsiEncoding (PDF 32000-1 Annex D.2) has a code for `c`. It matches Latin-1
/// outside 0x80..=0x9F, where it holds typographic punctuation instead of C1 controls.
fn is_win_ansi(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0x7E | 0xA0..=0xFF)
        || matches!(
            c,
            '€' | '‚'
                | 'ƒ'
                | '„'
                | '…'
                | '†'
                | '‡'
                | 'ˆ'
                | '‰'
                | 'Š'
                | '‹'
                | 'Œ'
                | 'Ž'
                | '‘'
                | '’'
                | '“'
                | '”'
                | '•'
                | '–'
                | '—'
                | '˜'
                | '™'
                | 'š'
                | '›'
                | 'œ'
                | 'ž'
                | 'Ÿ'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_latin_and_replaces_the_rest() {
        assert_eq!(sanitize("Müller GmbH"), "Müller GmbH");
        assert_eq!(sanitize("東京 office"), "?? office");
        assert_eq!(sanitize("a\tb\nc"), "a b c");
        assert_eq!(sanitize("€ 5 – “ok”"), "€ 5 – “ok”");
        assert_eq!(sanitize("😀"), "?");
    }

    #[test]
    fn width_grows_with_text_and_size() {
        let m = Metrics::get().unwrap();
        let w = m.width("Invoice", Face::Regular, 10.0);
        assert!(w > 20.0 && w < 50.0, "{w}");
        assert!(m.width("Invoice", Face::Bold, 10.0) > w);
        assert!((m.width("Invoice", Face::Regular, 20.0) - 2.0 * w).abs() < 0.01);
        assert_eq!(m.width("", Face::Regular, 10.0), 0.0);
        // The space is not in the bundled font's cmap; it must still be Helvetica's 278/1000.
        assert!((m.width(" ", Face::Bold, 10.0) - 2.78).abs() < 0.001);
        let digits = m.width("12", Face::Regular, 10.0);
        assert!((m.width("1 2", Face::Regular, 10.0) - digits - 2.78).abs() < 0.001);
    }

    #[test]
    fn truncate_cuts_with_an_ellipsis_within_the_width() {
        let m = Metrics::get().unwrap();
        assert_eq!(m.truncate("short", Face::Regular, 10.0, 100.0), "short");
        let cut = m.truncate(&"x".repeat(200), Face::Regular, 10.0, 100.0);
        assert!(cut.ends_with(ELLIPSIS));
        assert!(m.width(&cut, Face::Regular, 10.0) <= 100.0);
        assert_eq!(m.truncate("anything", Face::Regular, 10.0, 1.0), "");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_inside_long_words() {
        let m = Metrics::get().unwrap();
        let lines = m.wrap("alpha beta gamma delta", Face::Regular, 10.0, 60.0, 10);
        assert!(lines.len() > 1);
        assert_eq!(lines.join(" "), "alpha beta gamma delta");
        for l in &lines {
            assert!(m.width(l, Face::Regular, 10.0) <= 60.0, "{l}");
        }

        let word = "y".repeat(100);
        let lines = m.wrap(&word, Face::Regular, 10.0, 60.0, 100);
        assert_eq!(lines.concat(), word);
        assert!(lines
            .iter()
            .all(|l| m.width(l, Face::Regular, 10.0) <= 60.0));
    }

    #[test]
    fn wrap_cuts_after_max_lines() {
        let m = Metrics::get().unwrap();
        let text = "word ".repeat(200);
        let lines = m.wrap(&text, Face::Regular, 10.0, 80.0, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with(ELLIPSIS));
        assert!(lines
            .iter()
            .all(|l| m.width(l, Face::Regular, 10.0) <= 80.0));
        assert_eq!(
            m.wrap("", Face::Regular, 10.0, 80.0, 3),
            vec![String::new()]
        );
    }
}
