//! Invoice PDFs: [`render`] lays an [`InvoiceDocument`] out on A4 pages with printpdf, and
//! [`extract_text`] reads the text back with lopdf, so tests (here and end to end) can check
//! that the PDF says what the JSON invoice says.
//!
//! The document is plain preformatted strings and this crate depends on no other Tollgate
//! crate: money and dates are formatted once, by the caller, for both the JSON and the PDF.
//!
//! Text is set in the built-in Helvetica faces, so no font file is shipped or embedded. Those
//! fonts encode Windows-1252 only: any other character (e.g. "東京") is printed as `?`, while
//! Latin text such as "Müller GmbH" prints as is.

mod document;
mod extract;
mod layout;
mod text;

pub use document::{InvoiceDocument, InvoiceLineDoc, TierLineDoc};
pub use extract::{extract_text, page_count};

use printpdf::{PdfDocument, PdfParseErrorSeverity, PdfSaveOptions};

/// Why a PDF could not be rendered or read.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum PdfError {
    /// printpdf could not load the metrics of its built-in fonts (a build fault, not input).
    #[error("the built-in font metrics could not be loaded")]
    Font,
    /// printpdf reported errors while writing the document; the messages are joined.
    #[error("writing the invoice PDF failed: {0}")]
    Render(String),
    /// The bytes are not a PDF that could be parsed.
    #[error("the bytes are not a readable PDF")]
    Parse(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The PDF parsed, but the text of a page could not be decoded.
    #[error("the text of the PDF could not be extracted")]
    Extract(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Renders `doc` as a PDF (A4, one page or more) and returns the file's bytes, starting with
/// `%PDF-`.
///
/// Layout: the issuer and "Invoice {number}" (or "DRAFT") on top, then the customer, status,
/// issue date, currency and billing period, a table of lines (description, quantity, unit
/// price, amount) with each line's tiers indented beneath it, and finally the rows
/// "Subtotal {currency} {subtotal}", "Discount {currency} {discount}" and
/// "Total {currency} {total}", each drawn as one text run. Long tables continue on further
/// pages with the column titles repeated; every page has a "Page N of M" footer.
/// Descriptions wrap onto at most three lines and are then cut with "…"; any cell that is too
/// wide for its column is cut the same way, so text never overlaps.
///
/// # Errors
/// [`PdfError::Font`] if the built-in font metrics cannot be loaded and [`PdfError::Render`]
/// if printpdf reports an error while writing; neither depends on the document's content.
pub fn render(doc: &InvoiceDocument) -> Result<Vec<u8>, PdfError> {
    let pages = layout::pages(doc)?;

    let mut pdf = PdfDocument::new(&pdf_title(doc));
    pdf.metadata.info.creator = "Tollgate".to_owned();
    pdf.metadata.info.producer = "Tollgate".to_owned();
    pdf.with_pages(pages);

    let mut warnings = Vec::new();
    let bytes = pdf.save(&PdfSaveOptions::default(), &mut warnings);
    let errors: Vec<String> = warnings
        .into_iter()
        .filter(|w| w.severity == PdfParseErrorSeverity::Error)
        .map(|w| w.msg)
        .collect();
    if !errors.is_empty() {
        return Err(PdfError::Render(errors.join("; ")));
    }
    Ok(bytes)
}

/// The document title in the PDF metadata. printpdf copies it verbatim into the XMP packet
/// (XML), so only characters that need no escaping there are kept.
fn pdf_title(doc: &InvoiceDocument) -> String {
    layout::title(doc)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '/' | '#'))
        .collect()
}
