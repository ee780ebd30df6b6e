//! Reading a PDF's text back, for tests that compare a rendered invoice with its JSON.
//!
//! Uses lopdf, the PDF object library printpdf itself is built on, so this costs no extra
//! dependency. lopdf decodes the `/WinAnsiEncoding` strings of the built-in fonts back to
//! Unicode and ends each text object with a newline; [`crate::render`] draws every cell as its
//! own text object, so each cell comes back as one line.

use lopdf::Document;

use crate::PdfError;

/// Upper bound on one page's decompressed content: an invoice page is a few kilobytes, and
/// the bound keeps a hostile file from inflating without limit.
const MAX_PAGE_CONTENT_BYTES: usize = 64 * 1024 * 1024;

/// The text of every page of `pdf`, pages in order, one text run per line (`\n`-terminated).
///
/// For a PDF from [`crate::render`] that means, e.g., a line `Invoice INV-000042`, one line
/// per table cell and a line `Total USD 123.45`.
///
/// # Errors
/// [`PdfError::Parse`] if `pdf` is not a readable PDF, [`PdfError::Extract`] if a page's
/// content or font encoding cannot be decoded.
pub fn extract_text(pdf: &[u8]) -> Result<String, PdfError> {
    let document = load(pdf)?;
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    document
        .extract_text_with_limit(&pages, MAX_PAGE_CONTENT_BYTES)
        .map_err(|e| PdfError::Extract(Box::new(e)))
}

/// How many pages `pdf` has.
///
/// # Errors
/// [`PdfError::Parse`] if `pdf` is not a readable PDF.
pub fn page_count(pdf: &[u8]) -> Result<usize, PdfError> {
    Ok(load(pdf)?.get_pages().len())
}

fn load(pdf: &[u8]) -> Result<Document, PdfError> {
    Document::load_mem(pdf).map_err(|e| PdfError::Parse(Box::new(e)))
}
