//! Where everything goes on the A4 pages.
//!
//! Coordinates are PDF points from the bottom-left corner. Every piece of text is its own
//! text object (`BT … ET`), so text extractors see one run per cell, in reading order: the
//! header, the customer block, the table row by row, then the totals. The totals are single
//! runs ("Total USD 123.45") so they extract as one contiguous string.
//!
//! Rows never split: a line whose row (with its wrapped description) does not fit above the
//! bottom margin moves to a new page, which repeats the table header. The three totals rows
//! stay together the same way. Each page gets a footer with "Page N of M".

use printpdf::{
    Color, Greyscale, Line, LinePoint, Mm, Op, PaintMode, PdfFontHandle, PdfPage, Point, Pt, Rect,
    TextItem,
};

use crate::text::{sanitize, Face, Metrics};
use crate::{InvoiceDocument, InvoiceLineDoc, PdfError, TierLineDoc};

const PAGE_WIDTH_MM: f32 = 210.0;
const PAGE_HEIGHT_MM: f32 = 297.0;
const MARGIN_X: f32 = 50.0;
const MARGIN_TOP: f32 = 50.0;
/// Lowest baseline content may use; the footer sits below it.
const CONTENT_BOTTOM: f32 = 64.0;
const FOOTER_BASELINE: f32 = 32.0;

const TITLE_SIZE: f32 = 16.0;
const BODY_SIZE: f32 = 10.0;
const SMALL_SIZE: f32 = 9.0;
const TIER_SIZE: f32 = 8.5;
const FOOTER_SIZE: f32 = 8.0;
const TOTAL_SIZE: f32 = 12.0;

const LINE_LEADING: f32 = 13.0;
const TIER_LEADING: f32 = 11.0;
const ROW_PADDING: f32 = 4.0;
const TIER_INDENT: f32 = 12.0;
/// Space between the table's outer edges and its first and last columns' text.
const CELL_INSET: f32 = 4.0;
const COLUMN_GAP: f32 = 12.0;
/// The description column never gets narrower than this; numeric cells are cut instead.
const MIN_DESCRIPTION_WIDTH: f32 = 160.0;
/// What quantity and unit price keep when the amount needs the room.
const MIN_NUMERIC_WIDTH: f32 = 50.0;
const MAX_DESCRIPTION_LINES: usize = 3;
const MAX_TIER_LABEL_LINES: usize = 2;

const BLACK: f32 = 0.0;
const MUTED: f32 = 0.4;
const RULE: f32 = 0.75;
const BAND: f32 = 0.92;

fn page_width() -> f32 {
    Pt::from(Mm(PAGE_WIDTH_MM)).0
}

fn page_height() -> f32 {
    Pt::from(Mm(PAGE_HEIGHT_MM)).0
}

fn content_right() -> f32 {
    page_width() - MARGIN_X
}

fn content_width() -> f32 {
    page_width() - 2.0 * MARGIN_X
}

/// Horizontal placement of a run: the x it starts at, or the x it ends at.
#[derive(Debug, Clone, Copy)]
enum Anchor {
    Left(f32),
    Right(f32),
}

/// A text style: face, size and grey level (0 black … 1 white).
#[derive(Debug, Clone, Copy)]
struct Style {
    face: Face,
    size: f32,
    grey: f32,
}

const fn style(face: Face, size: f32, grey: f32) -> Style {
    Style { face, size, grey }
}

/// Right edges and widths of the table's columns, sized to the widest cell.
#[derive(Debug, Clone, Copy)]
struct Columns {
    description_x: f32,
    description_width: f32,
    quantity_right: f32,
    quantity_width: f32,
    unit_price_right: f32,
    unit_price_width: f32,
    amount_right: f32,
    amount_width: f32,
}

impl Columns {
    fn fit(doc: &InvoiceDocument, metrics: &Metrics) -> Self {
        let header = style(Face::Bold, SMALL_SIZE, BLACK);
        let line = style(Face::Regular, BODY_SIZE, BLACK);
        let tier = style(Face::Regular, TIER_SIZE, MUTED);
        let measure = |s: &str, st: Style| metrics.width(&sanitize(s), st.face, st.size);
        let widest = |title: &str,
                      of_line: fn(&InvoiceLineDoc) -> &str,
                      of_tier: fn(&TierLineDoc) -> &str| {
            doc.lines
                .iter()
                .flat_map(|l| {
                    std::iter::once(measure(of_line(l), line))
                        .chain(l.tiers.iter().map(|t| measure(of_tier(t), tier)))
                })
                .fold(measure(title, header), f32::max)
        };
        let mut quantity_width = widest("Quantity", |l| &l.quantity, |t| &t.quantity);
        let mut unit_price_width = widest("Unit price", |l| &l.unit_price, |t| &t.unit_price);
        let mut amount_width = widest("Amount", |l| &l.amount, |t| &t.amount);

        // Too wide for the page (absurd quantities or prices): the amount keeps its width if
        // it can, and quantity and unit price share what is left, cut with an ellipsis.
        let budget = content_width() - MIN_DESCRIPTION_WIDTH - 3.0 * COLUMN_GAP - CELL_INSET;
        if quantity_width + unit_price_width + amount_width > budget {
            amount_width = amount_width.min(budget - 2.0 * MIN_NUMERIC_WIDTH);
            let rest = budget - amount_width;
            let half = rest / 2.0;
            (quantity_width, unit_price_width) = if quantity_width + unit_price_width <= rest {
                (quantity_width, unit_price_width)
            } else if quantity_width <= half {
                (quantity_width, rest - quantity_width)
            } else if unit_price_width <= half {
                (rest - unit_price_width, unit_price_width)
            } else {
                (half, half)
            };
        }

        let amount_right = content_right() - CELL_INSET;
        let unit_price_right = amount_right - amount_width - COLUMN_GAP;
        let quantity_right = unit_price_right - unit_price_width - COLUMN_GAP;
        let description_x = MARGIN_X;
        let description_width = quantity_right - quantity_width - COLUMN_GAP - description_x;
        Columns {
            description_x,
            description_width,
            quantity_right,
            quantity_width,
            unit_price_right,
            unit_price_width,
            amount_right,
            amount_width,
        }
    }
}

/// Lays the document out and returns its pages.
pub(crate) fn pages(doc: &InvoiceDocument) -> Result<Vec<PdfPage>, PdfError> {
    let metrics = Metrics::get()?;
    let mut w = Writer {
        metrics,
        doc,
        title: title(doc),
        columns: Columns::fit(doc, metrics),
        done: Vec::new(),
        ops: Vec::new(),
        y: page_height() - MARGIN_TOP,
    };

    w.first_page_header();
    w.table_header();
    if doc.lines.is_empty() {
        let muted = style(Face::Regular, BODY_SIZE, MUTED);
        w.ensure_room(LINE_LEADING + ROW_PADDING);
        w.y -= LINE_LEADING;
        w.text(
            "No charges in this period.",
            muted,
            Anchor::Left(MARGIN_X),
            content_width(),
        );
        w.y -= ROW_PADDING;
    }
    for line in &doc.lines {
        w.line_row(line);
        for tier in &line.tiers {
            w.tier_row(tier);
        }
        w.rule(
            w.y - ROW_PADDING / 2.0,
            MARGIN_X,
            content_right(),
            0.4,
            RULE,
        );
    }
    w.totals();
    Ok(w.finish())
}

/// "Invoice INV-000042", or "DRAFT" before a number is assigned.
pub(crate) fn title(doc: &InvoiceDocument) -> String {
    match &doc.number {
        Some(number) => format!("Invoice {number}"),
        None => "DRAFT".to_owned(),
    }
}

struct Writer<'a> {
    metrics: &'a Metrics,
    doc: &'a InvoiceDocument,
    title: String,
    columns: Columns,
    /// Operations of the finished pages.
    done: Vec<Vec<Op>>,
    /// Operations of the page being filled.
    ops: Vec<Op>,
    /// Baseline of the last thing placed on the current page.
    y: f32,
}

impl Writer<'_> {
    /// Draws `raw` (sanitized, then cut to `max_width`) with its baseline at the current `y`.
    fn text(&mut self, raw: &str, st: Style, anchor: Anchor, max_width: f32) {
        let fitted = self
            .metrics
            .truncate(&sanitize(raw), st.face, st.size, max_width.max(0.0));
        self.run(fitted, st, anchor);
    }

    /// Draws already sanitized, already fitted text at the current `y`.
    fn run(&mut self, text: String, st: Style, anchor: Anchor) {
        if text.is_empty() {
            return;
        }
        let x = match anchor {
            Anchor::Left(x) => x,
            Anchor::Right(right) => right - self.metrics.width(&text, st.face, st.size),
        };
        self.ops.extend([
            Op::SetFillColor { col: grey(st.grey) },
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(st.face.builtin()),
                size: Pt(st.size),
            },
            Op::SetTextCursor {
                pos: Point {
                    x: Pt(x),
                    y: Pt(self.y),
                },
            },
            Op::ShowText {
                items: vec![TextItem::Text(text)],
            },
            Op::EndTextSection,
        ]);
    }

    fn rule(&mut self, y: f32, from_x: f32, to_x: f32, thickness: f32, level: f32) {
        let point = |x: f32| LinePoint {
            p: Point { x: Pt(x), y: Pt(y) },
            bezier: false,
        };
        self.ops.extend([
            Op::SetOutlineColor { col: grey(level) },
            Op::SetOutlineThickness { pt: Pt(thickness) },
            Op::DrawLine {
                line: Line {
                    points: vec![point(from_x), point(to_x)],
                    is_closed: false,
                },
            },
        ]);
    }

    fn band(&mut self, bottom: f32, height: f32, level: f32) {
        let mut rect = Rect::from_xywh(Pt(MARGIN_X), Pt(bottom), Pt(content_width()), Pt(height));
        rect.mode = Some(PaintMode::Fill);
        self.ops.extend([
            Op::SetFillColor { col: grey(level) },
            Op::DrawRectangle { rectangle: rect },
        ]);
    }

    /// Starts a new page when `height` more points would run into the footer; continuation
    /// pages repeat a short header and, if `table_header`, the column titles.
    fn ensure_room_with(&mut self, height: f32, table_header: bool) {
        if self.y - height >= CONTENT_BOTTOM {
            return;
        }
        self.done.push(std::mem::take(&mut self.ops));
        self.y = page_height() - MARGIN_TOP;
        self.continuation_header();
        if table_header {
            self.table_header();
        }
    }

    fn ensure_room(&mut self, height: f32) {
        self.ensure_room_with(height, true);
    }

    fn first_page_header(&mut self) {
        let doc = self.doc;
        let half = content_width() / 2.0 - COLUMN_GAP;
        let title_style = style(Face::Bold, TITLE_SIZE, BLACK);
        let small = style(Face::Regular, SMALL_SIZE, MUTED);
        let label = style(Face::Bold, SMALL_SIZE, MUTED);
        let body = style(Face::Regular, BODY_SIZE + 1.0, BLACK);

        // Issuer left, title right, on one baseline.
        self.y -= TITLE_SIZE;
        let title =
            self.metrics
                .truncate(&sanitize(&self.title), title_style.face, TITLE_SIZE, half);
        let title_width = self.metrics.width(&title, title_style.face, TITLE_SIZE);
        self.run(title, title_style, Anchor::Right(content_right()));
        let issuer_room = content_width() - title_width - 2.0 * COLUMN_GAP;
        self.text(
            &doc.issuer_name,
            title_style,
            Anchor::Left(MARGIN_X),
            issuer_room,
        );
        self.y -= 10.0;
        self.rule(self.y, MARGIN_X, content_right(), 0.8, BLACK);

        // Customer block left, invoice facts right.
        let block_top = self.y - 8.0;
        self.y = block_top - SMALL_SIZE;
        self.text("Bill to", label, Anchor::Left(MARGIN_X), half);
        self.y -= 15.0;
        self.text(&doc.customer_name, body, Anchor::Left(MARGIN_X), half);
        self.y -= 13.0;
        let reference = format!("Reference: {}", doc.customer_reference);
        self.text(&reference, small, Anchor::Left(MARGIN_X), half);
        let left_bottom = self.y;

        self.y = block_top - SMALL_SIZE;
        let mut facts = vec![format!("Status: {}", doc.status)];
        if let Some(issued) = &doc.issued_at {
            facts.push(format!("Issued: {issued}"));
        }
        facts.push(format!("Currency: {}", doc.currency));
        for (i, fact) in facts.iter().enumerate() {
            if i > 0 {
                self.y -= 13.0;
            }
            self.text(fact, small, Anchor::Right(content_right()), half);
        }
        self.y = self.y.min(left_bottom) - 18.0;

        let period = format!(
            "Billing period: {} \u{2013} {}",
            doc.period_start, doc.period_end
        );
        self.text(
            &period,
            style(Face::Regular, SMALL_SIZE, BLACK),
            Anchor::Left(MARGIN_X),
            content_width(),
        );
        self.y -= 14.0;
    }

    fn continuation_header(&mut self) {
        let small = style(Face::Regular, SMALL_SIZE, MUTED);
        self.y -= SMALL_SIZE;
        let header = format!(
            "{} \u{2013} {} (continued)",
            self.doc.issuer_name, self.title
        );
        self.text(&header, small, Anchor::Left(MARGIN_X), content_width());
        self.y -= 14.0;
    }

    fn table_header(&mut self) {
        let c = self.columns;
        let st = style(Face::Bold, SMALL_SIZE, BLACK);
        let height = SMALL_SIZE + 8.0;
        self.band(self.y - height, height, BAND);
        self.y -= SMALL_SIZE + 3.0;
        self.text(
            "Description",
            st,
            Anchor::Left(c.description_x + CELL_INSET),
            c.description_width,
        );
        self.text(
            "Quantity",
            st,
            Anchor::Right(c.quantity_right),
            c.quantity_width,
        );
        self.text(
            "Unit price",
            st,
            Anchor::Right(c.unit_price_right),
            c.unit_price_width,
        );
        self.text("Amount", st, Anchor::Right(c.amount_right), c.amount_width);
        self.y -= 5.0;
    }

    fn line_row(&mut self, line: &InvoiceLineDoc) {
        let c = self.columns;
        let st = style(Face::Regular, BODY_SIZE, BLACK);
        let description = self.metrics.wrap(
            &sanitize(&line.description),
            st.face,
            st.size,
            c.description_width - CELL_INSET,
            MAX_DESCRIPTION_LINES,
        );
        let height = ROW_PADDING + description.len() as f32 * LINE_LEADING;
        self.ensure_room(height);
        self.y -= ROW_PADDING + LINE_LEADING - 2.0;
        let first_baseline = self.y;
        self.text(
            &line.quantity,
            st,
            Anchor::Right(c.quantity_right),
            c.quantity_width,
        );
        self.text(
            &line.unit_price,
            st,
            Anchor::Right(c.unit_price_right),
            c.unit_price_width,
        );
        self.text(
            &line.amount,
            st,
            Anchor::Right(c.amount_right),
            c.amount_width,
        );
        for (i, text) in description.into_iter().enumerate() {
            self.y = first_baseline - i as f32 * LINE_LEADING;
            self.run(text, st, Anchor::Left(c.description_x + CELL_INSET));
        }
        self.y -= 2.0;
    }

    fn tier_row(&mut self, tier: &TierLineDoc) {
        let c = self.columns;
        let st = style(Face::Regular, TIER_SIZE, MUTED);
        let x = c.description_x + CELL_INSET + TIER_INDENT;
        let label = self.metrics.wrap(
            &sanitize(&tier.label),
            st.face,
            st.size,
            c.description_width - CELL_INSET - TIER_INDENT,
            MAX_TIER_LABEL_LINES,
        );
        self.ensure_room(label.len() as f32 * TIER_LEADING);
        self.y -= TIER_LEADING;
        let first_baseline = self.y;
        self.text(
            &tier.quantity,
            st,
            Anchor::Right(c.quantity_right),
            c.quantity_width,
        );
        self.text(
            &tier.unit_price,
            st,
            Anchor::Right(c.unit_price_right),
            c.unit_price_width,
        );
        self.text(
            &tier.amount,
            st,
            Anchor::Right(c.amount_right),
            c.amount_width,
        );
        for (i, text) in label.into_iter().enumerate() {
            self.y = first_baseline - i as f32 * TIER_LEADING;
            self.run(text, st, Anchor::Left(x));
        }
    }

    fn totals(&mut self) {
        let doc = self.doc;
        let regular = style(Face::Regular, BODY_SIZE, BLACK);
        let bold = style(Face::Bold, TOTAL_SIZE, BLACK);
        let width = content_width();
        let right = self.columns.amount_right;
        let block = 14.0 + 2.0 * 15.0 + 8.0 + TOTAL_SIZE + 6.0;
        self.ensure_room_with(block, false);

        self.y -= 14.0 + BODY_SIZE;
        let subtotal = format!("Subtotal {} {}", doc.currency, doc.subtotal);
        self.text(&subtotal, regular, Anchor::Right(right), width);
        self.y -= 15.0;
        let discount = format!("Discount {} {}", doc.currency, doc.discount);
        self.text(&discount, regular, Anchor::Right(right), width);
        self.y -= 8.0;
        let rule_from = content_right() - width / 2.0;
        self.rule(self.y, rule_from, content_right(), 0.8, BLACK);
        self.y -= TOTAL_SIZE + 6.0;
        let total = format!("Total {} {}", doc.currency, doc.total);
        self.text(&total, bold, Anchor::Right(right), width);
    }

    /// Closes the last page and stamps every page's footer, now that the count is known.
    fn finish(mut self) -> Vec<PdfPage> {
        self.done.push(std::mem::take(&mut self.ops));
        let count = self.done.len();
        let footer = style(Face::Regular, FOOTER_SIZE, MUTED);
        let half = content_width() / 2.0;
        let pages = std::mem::take(&mut self.done);
        pages
            .into_iter()
            .enumerate()
            .map(|(i, ops)| {
                self.ops = ops;
                self.y = FOOTER_BASELINE;
                let left = format!("{} \u{2013} {}", self.doc.issuer_name, self.title);
                self.text(&left, footer, Anchor::Left(MARGIN_X), half);
                let page = format!("Page {} of {count}", i + 1);
                self.text(&page, footer, Anchor::Right(content_right()), half);
                PdfPage::new(
                    Mm(PAGE_WIDTH_MM),
                    Mm(PAGE_HEIGHT_MM),
                    std::mem::take(&mut self.ops),
                )
            })
            .collect()
    }
}

fn grey(level: f32) -> Color {
    Color::Greyscale(Greyscale::new(level, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InvoiceLineDoc;

    fn stretched_document() -> InvoiceDocument {
        let line = |description: String, tiers: Vec<TierLineDoc>| InvoiceLineDoc {
            description,
            quantity: "123456789012345678901234567890".to_owned(),
            unit_price: "0.00000000000000000001234".to_owned(),
            amount: "9,999,999,999,999,999,999,999.99".to_owned(),
            tiers,
        };
        let tiers = (0..30)
            .map(|i| TierLineDoc {
                label: format!("Tier {i} {}", "with a long label ".repeat(8)),
                quantity: "1,000,000,000".to_owned(),
                unit_price: "0.000001".to_owned(),
                amount: "1,000.00".to_owned(),
            })
            .collect();
        InvoiceDocument {
            issuer_name: "Issuer ".repeat(30),
            number: Some("INV-".repeat(20)),
            status: "finalized ".repeat(10),
            customer_name: "東京 Customer ".repeat(20),
            customer_reference: "x".repeat(300),
            currency: "USD".to_owned(),
            period_start: "2026-10-01 00:00 UTC ".repeat(5),
            period_end: "2026-11-01 00:00 UTC".to_owned(),
            issued_at: Some("2026-11-01 06:00 UTC ".repeat(6)),
            lines: vec![
                line("W".repeat(500), tiers),
                line("Müller ".repeat(80), Vec::new()),
            ],
            subtotal: "1".repeat(40),
            discount: "0.00".to_owned(),
            total: "1".repeat(40),
        }
    }

    /// Every text run of every page, as (x, baseline, width).
    fn runs(pages: &[PdfPage]) -> Vec<(f32, f32, f32)> {
        let metrics = Metrics::get().unwrap();
        let mut out = Vec::new();
        for page in pages {
            let (mut face, mut size, mut at) = (Face::Regular, 0.0, (0.0, 0.0));
            for op in &page.ops {
                match op {
                    Op::SetFont { font, size: s } => {
                        face = match font {
                            PdfFontHandle::Builtin(printpdf::BuiltinFont::HelveticaBold) => {
                                Face::Bold
                            }
                            _ => Face::Regular,
                        };
                        size = s.0;
                    }
                    Op::SetTextCursor { pos } => at = (pos.x.0, pos.y.0),
                    Op::ShowText { items } => {
                        for item in items {
                            if let TextItem::Text(t) = item {
                                out.push((at.0, at.1, metrics.width(t, face, size)));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    #[test]
    fn text_stays_inside_the_margins_whatever_its_length() {
        let pages = pages(&stretched_document()).unwrap();
        assert!(pages.len() > 1);
        let runs = runs(&pages);
        assert!(runs.len() > 100);
        for (x, y, width) in runs {
            assert!(x >= MARGIN_X - 0.01, "starts at {x}");
            assert!(x + width <= content_right() + 0.01, "ends at {}", x + width);
            assert!(
                y >= FOOTER_BASELINE - 0.01 && y <= page_height() - MARGIN_TOP,
                "y {y}"
            );
        }
    }

    #[test]
    fn table_text_stays_above_the_footer() {
        let pages = pages(&stretched_document()).unwrap();
        for (_, y, _) in runs(&pages) {
            assert!(
                y == FOOTER_BASELINE || y >= CONTENT_BOTTOM - 0.01,
                "baseline {y}"
            );
        }
    }
}
