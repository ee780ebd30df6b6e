//! The rendered PDF says what the JSON invoice says: its text, read back with
//! `extract_text`, holds the number, the customer, every amount and the totals verbatim.

use tollgate_invoice_pdf::{
    extract_text, page_count, render, InvoiceDocument, InvoiceLineDoc, PdfError, TierLineDoc,
};

fn line(description: &str, quantity: &str, unit_price: &str, amount: &str) -> InvoiceLineDoc {
    InvoiceLineDoc {
        description: description.to_owned(),
        quantity: quantity.to_owned(),
        unit_price: unit_price.to_owned(),
        amount: amount.to_owned(),
        tiers: Vec::new(),
    }
}

fn tier(label: &str, quantity: &str, unit_price: &str, amount: &str) -> TierLineDoc {
    TierLineDoc {
        label: label.to_owned(),
        quantity: quantity.to_owned(),
        unit_price: unit_price.to_owned(),
        amount: amount.to_owned(),
    }
}

/// Three lines, the second with a graduated breakdown; 29.00 + 94.45 + 10.00 = 133.45.
fn three_line_invoice() -> InvoiceDocument {
    let mut api_calls = line("API calls", "12,500", "", "94.45");
    api_calls.tiers = vec![
        tier("First 10,000 calls", "10,000", "0.0080", "80.00"),
        tier("Next 2,500 calls", "2,500", "0.0058", "14.45"),
    ];
    InvoiceDocument {
        issuer_name: "Acme Render Farm".to_owned(),
        number: Some("INV-000042".to_owned()),
        status: "finalized".to_owned(),
        customer_name: "Globex Corporation".to_owned(),
        customer_reference: "acct-ext-7781".to_owned(),
        currency: "USD".to_owned(),
        period_start: "2026-10-01 00:00 UTC".to_owned(),
        period_end: "2026-11-01 00:00 UTC".to_owned(),
        issued_at: Some("2026-11-01 06:00 UTC".to_owned()),
        lines: vec![
            line("Pro plan (monthly)", "1", "29.00", "29.00"),
            api_calls,
            line("GPU minutes", "40", "0.25", "10.00"),
        ],
        subtotal: "133.45".to_owned(),
        discount: "10.00".to_owned(),
        total: "123.45".to_owned(),
    }
}

fn lines_of(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

#[test]
fn output_is_a_pdf() {
    let pdf = render(&three_line_invoice()).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "{:?}", &pdf[..16.min(pdf.len())]);
    assert_eq!(page_count(&pdf).unwrap(), 1);
}

#[test]
fn extracted_text_equals_the_json_totals() {
    let doc = three_line_invoice();
    let text = extract_text(&render(&doc).unwrap()).unwrap();
    let lines = lines_of(&text);

    assert!(text.contains("Invoice INV-000042"), "{text}");
    assert!(text.contains("Acme Render Farm"), "{text}");
    assert!(text.contains("Globex Corporation"), "{text}");
    assert!(text.contains("acct-ext-7781"), "{text}");
    assert!(text.contains("2026-10-01 00:00 UTC"), "{text}");
    assert!(text.contains("2026-11-01 06:00 UTC"), "{text}");
    assert!(text.contains("finalized"), "{text}");
    for l in &doc.lines {
        assert!(
            lines.contains(&l.description.as_str()),
            "{} in {text}",
            l.description
        );
        assert!(lines.contains(&l.amount.as_str()), "{} in {text}", l.amount);
        for t in &l.tiers {
            assert!(lines.contains(&t.label.as_str()), "{} in {text}", t.label);
            assert!(lines.contains(&t.amount.as_str()), "{} in {text}", t.amount);
            assert!(
                lines.contains(&t.unit_price.as_str()),
                "{} in {text}",
                t.unit_price
            );
        }
    }
    for total in [
        "Subtotal USD 133.45",
        "Discount USD 10.00",
        "Total USD 123.45",
    ] {
        assert!(lines.contains(&total), "{total:?} in {text}");
    }
    assert!(!text.contains("DRAFT"), "{text}");
}

#[test]
fn totals_come_from_the_document_not_from_the_lines() {
    // The PDF prints what the caller computed; it never re-adds the lines.
    let mut doc = three_line_invoice();
    doc.currency = "EUR".to_owned();
    doc.subtotal = "1,000.00".to_owned();
    doc.discount = "0.00".to_owned();
    doc.total = "1,000.00".to_owned();
    let text = extract_text(&render(&doc).unwrap()).unwrap();
    let lines = lines_of(&text);
    assert!(lines.contains(&"Subtotal EUR 1,000.00"), "{text}");
    assert!(lines.contains(&"Discount EUR 0.00"), "{text}");
    assert!(lines.contains(&"Total EUR 1,000.00"), "{text}");
}

#[test]
fn a_draft_is_titled_draft() {
    let mut doc = three_line_invoice();
    doc.number = None;
    doc.status = "draft".to_owned();
    doc.issued_at = None;
    let text = extract_text(&render(&doc).unwrap()).unwrap();
    assert!(lines_of(&text).contains(&"DRAFT"), "{text}");
    assert!(!text.contains("INV-"), "{text}");
    assert!(!text.contains("Issued:"), "{text}");
    assert!(lines_of(&text).contains(&"Total USD 123.45"), "{text}");
}

#[test]
fn many_lines_continue_on_more_pages() {
    let mut doc = three_line_invoice();
    doc.lines = (1..=120)
        .map(|i| {
            line(
                &format!("Metered item {i:03}"),
                "1",
                "1.00",
                &format!("{i}.00"),
            )
        })
        .collect();
    doc.subtotal = "7260.00".to_owned();
    doc.discount = "0.00".to_owned();
    doc.total = "7260.00".to_owned();

    let pdf = render(&doc).unwrap();
    let pages = page_count(&pdf).unwrap();
    assert!(pages > 1, "{pages} page(s)");

    let text = extract_text(&pdf).unwrap();
    let lines = lines_of(&text);
    for i in 1..=120 {
        let description = format!("Metered item {i:03}");
        assert!(
            lines.contains(&description.as_str()),
            "{description} missing"
        );
    }
    assert!(lines.contains(&"Total USD 7260.00"), "{text}");
    assert!(
        lines.contains(&format!("Page {pages} of {pages}").as_str()),
        "{text}"
    );
    // The column titles are repeated on every page.
    assert_eq!(lines.iter().filter(|l| **l == "Description").count(), pages);
    // The totals come last, after the final line.
    let last_line = text.find("Metered item 120").unwrap();
    assert!(text.find("Total USD 7260.00").unwrap() > last_line);
}

#[test]
fn long_descriptions_are_wrapped_and_cut() {
    let mut doc = three_line_invoice();
    let long = "Compute seconds on the large instance class in region eu-west ".repeat(10);
    doc.lines[0].description = long.clone();
    doc.lines[1].description = "x".repeat(500);
    let text = extract_text(&render(&doc).unwrap()).unwrap();
    // Three wrapped lines at most, the last ending in an ellipsis; the rest is dropped.
    assert!(text.contains("Compute seconds on the large"), "{text}");
    assert!(text.contains('\u{2026}'), "{text}");
    assert!(text.len() < long.len() + 2000, "{text}");
    assert!(lines_of(&text).contains(&"Total USD 123.45"), "{text}");
}

#[test]
fn non_latin_text_does_not_panic_and_is_replaced() {
    let mut doc = three_line_invoice();
    doc.issuer_name = "Müller GmbH".to_owned();
    doc.customer_name = "東京 Trading".to_owned();
    doc.lines[0].description = "Übersetzung – 翻訳 😀".to_owned();
    doc.number = Some("INV-ß-東".to_owned());
    let pdf = render(&doc).unwrap();
    let text = extract_text(&pdf).unwrap();
    assert!(text.contains("Müller GmbH"), "{text}");
    assert!(text.contains("?? Trading"), "{text}");
    assert!(text.contains("Übersetzung – ?? ?"), "{text}");
    assert!(text.contains("Invoice INV-ß-?"), "{text}");
}

#[test]
fn an_invoice_without_lines_still_renders_its_totals() {
    let mut doc = three_line_invoice();
    doc.lines.clear();
    doc.subtotal = "0.00".to_owned();
    doc.discount = "0.00".to_owned();
    doc.total = "0.00".to_owned();
    let text = extract_text(&render(&doc).unwrap()).unwrap();
    assert!(text.contains("No charges in this period."), "{text}");
    assert!(lines_of(&text).contains(&"Total USD 0.00"), "{text}");
}

#[test]
fn the_document_round_trips_through_json() {
    let doc = three_line_invoice();
    let json = serde_json::to_string(&doc).unwrap();
    let back: InvoiceDocument = serde_json::from_str(&json).unwrap();
    assert_eq!(back, doc);

    // `unit_price` and `tiers` may be left out of a line.
    let minimal: InvoiceLineDoc =
        serde_json::from_str(r#"{"description":"Fee","quantity":"1","amount":"5.00"}"#).unwrap();
    assert_eq!(minimal.unit_price, "");
    assert!(minimal.tiers.is_empty());
}

#[test]
fn garbage_is_not_a_pdf() {
    assert!(matches!(
        extract_text(b"not a pdf"),
        Err(PdfError::Parse(_))
    ));
    assert!(matches!(page_count(b""), Err(PdfError::Parse(_))));
}

#[test]
fn oversized_fields_are_cut_but_amounts_and_totals_are_kept() {
    let mut doc = three_line_invoice();
    doc.issuer_name = "An Issuer With A Very Long Legal Name ".repeat(5);
    doc.customer_name = "Customer ".repeat(30);
    doc.customer_reference = "ref-".repeat(60);
    doc.lines[0].description = "Z".repeat(400);
    doc.lines[0].quantity = "123456789012345678901234567890.123456".to_owned();
    doc.lines[0].unit_price = "0.000000000001234567890123".to_owned();
    doc.lines[0].amount = "9,999,999,999,999,999.99".to_owned();
    doc.lines[1].tiers = (0..80)
        .map(|i| {
            let label = format!("Tier {i}: an extraordinarily long tier label that has to wrap");
            tier(&label, "1000", "0.001", "1.00")
        })
        .collect();
    doc.total = "9,999,999,999,999,999.99".to_owned();

    let pdf = render(&doc).unwrap();
    assert!(page_count(&pdf).unwrap() > 1);
    let text = extract_text(&pdf).unwrap();
    let lines = lines_of(&text);
    assert!(lines.contains(&"9,999,999,999,999,999.99"), "{text}");
    assert!(
        lines.contains(&"Total USD 9,999,999,999,999,999.99"),
        "{text}"
    );
    // The quantity and unit price did not fit their columns and were cut.
    assert!(
        !text.contains("123456789012345678901234567890.123456"),
        "{text}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("12345") && l.ends_with('\u{2026}')));
    // No cell runs on: nothing extracted is longer than a line of the page can hold.
    assert!(lines.iter().all(|l| l.chars().count() < 130), "{text}");
}
