//! Writes a sample invoice PDF, to look at the layout by eye:
//! `cargo run -p tollgate-invoice-pdf --example sample_invoice -- /tmp/invoice.pdf [LINES]`.

use tollgate_invoice_pdf::{render, InvoiceDocument, InvoiceLineDoc, TierLineDoc};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "invoice.pdf".to_owned());
    let extra: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(0);

    let mut lines = vec![
        InvoiceLineDoc {
            description: "Pro plan (monthly)".to_owned(),
            quantity: "1".to_owned(),
            unit_price: "29.00".to_owned(),
            amount: "29.00".to_owned(),
            tiers: Vec::new(),
        },
        InvoiceLineDoc {
            description: "API calls, graduated pricing across all workspaces of the account, \
                          including retries that reached the executor"
                .to_owned(),
            quantity: "12,500".to_owned(),
            unit_price: String::new(),
            amount: "94.45".to_owned(),
            tiers: vec![
                TierLineDoc {
                    label: "First 10,000 calls".to_owned(),
                    quantity: "10,000".to_owned(),
                    unit_price: "0.0080".to_owned(),
                    amount: "80.00".to_owned(),
                },
                TierLineDoc {
                    label: "Next 2,500 calls".to_owned(),
                    quantity: "2,500".to_owned(),
                    unit_price: "0.0058".to_owned(),
                    amount: "14.45".to_owned(),
                },
            ],
        },
        InvoiceLineDoc {
            description: "Übersetzungen für 東京".to_owned(),
            quantity: "40".to_owned(),
            unit_price: "0.25".to_owned(),
            amount: "10.00".to_owned(),
            tiers: Vec::new(),
        },
    ];
    lines.extend((1..=extra).map(|i| InvoiceLineDoc {
        description: format!("Metered item {i:03}"),
        quantity: "1".to_owned(),
        unit_price: "1.00".to_owned(),
        amount: "1.00".to_owned(),
        tiers: Vec::new(),
    }));

    let doc = InvoiceDocument {
        issuer_name: "Müller GmbH".to_owned(),
        number: Some("INV-000042".to_owned()),
        status: "finalized".to_owned(),
        customer_name: "Globex Corporation".to_owned(),
        customer_reference: "acct-ext-7781".to_owned(),
        currency: "USD".to_owned(),
        period_start: "2026-10-01 00:00 UTC".to_owned(),
        period_end: "2026-11-01 00:00 UTC".to_owned(),
        issued_at: Some("2026-11-01 06:00 UTC".to_owned()),
        lines,
        subtotal: "133.45".to_owned(),
        discount: "10.00".to_owned(),
        total: "123.45".to_owned(),
    };
    std::fs::write(&path, render(&doc)?)?;
    println!("wrote {path}");
    Ok(())
}
