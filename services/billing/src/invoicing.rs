//! Finalizing invoices and showing them (issue 4, "Billing runs", "Invoice PDF"): the gapless
//! number, the PDF (rendered by `tollgate-invoice-pdf`, stored as an artifact, served through a
//! signed link), `invoice.finalized` and `payment.requested` through the outbox, and (issue 5)
//! the invoice's first payment for the collector; and the one JSON shape of an invoice, from
//! which the PDF is also drawn (so the two always agree).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tollgate_domain::{AccountId, BillingEvent, InvoiceId, SubscriptionId};
use tollgate_invoice_pdf::{InvoiceDocument, InvoiceLineDoc, TierLineDoc};
use tollgate_pricing::Currency;
use tollgate_storage::artifacts::NewArtifact;
use tollgate_storage::invoices::{self, CreditNoteRow, InvoiceLineRow, InvoiceRow};
use tollgate_storage::models::AccountRow;
use tollgate_storage::AsyncPgConnection;
use uuid::Uuid;

use crate::rating::major;
use crate::{BillingContext, BillingError};

/// Finalizes a rated draft at `at`: takes the issuer's next number, renders and stores the PDF,
/// freezes the invoice and announces it, all in the caller's transaction (a rollback returns
/// the number, so numbers stay gapless).
pub async fn finalize(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    mut draft: InvoiceRow,
    at: DateTime<Utc>,
) -> Result<(), BillingError> {
    let number = invoices::next_number(conn, draft.tenant_id).await?;
    draft.status = "finalized".into();
    draft.number = Some(number.0);
    draft.number_text = Some(number.1.clone());
    draft.finalized_at = Some(at);
    let lines = invoices::lines(conn, draft.id).await?;
    let view = InvoiceView::build(conn, &draft, lines, Vec::new(), None).await?;
    let pdf = tollgate_invoice_pdf::render(&view.document())
        .map_err(|e| BillingError::Internal(anyhow::anyhow!("rendering invoice PDF: {e}")))?;
    let artifact_id = store_pdf(ctx, conn, &draft, &number.1, pdf).await?;
    invoices::mark_finalized(conn, draft.id, number.clone(), artifact_id, at).await?;
    crate::events::enqueue(
        ctx,
        conn,
        draft.tenant_id,
        BillingEvent::InvoiceFinalizedV1 {
            invoice_id: draft.id,
            number: number.1.clone(),
            account_id: draft.account_id,
            subscription_id: draft.subscription_id,
            currency: draft.currency.clone(),
            total_minor: draft.total_minor,
            period_start: draft.period_start,
            period_end: draft.period_end,
        },
    )
    .await?;
    if draft.total_minor > 0 {
        crate::events::enqueue(
            ctx,
            conn,
            draft.tenant_id,
            BillingEvent::PaymentRequestedV1 {
                invoice_id: draft.id,
                number: number.1,
                account_id: draft.account_id,
                currency: draft.currency.clone(),
                amount_minor: draft.total_minor,
            },
        )
        .await?;
        crate::payments::request_first_payment(ctx, conn, &draft).await?;
    }
    Ok(())
}

/// Writes the PDF object and its artifact row (`invoices/<number>.pdf`); None when the service
/// runs without an object store.
async fn store_pdf(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    number: &str,
    pdf: Vec<u8>,
) -> Result<Option<Uuid>, BillingError> {
    let Some(objects) = &ctx.objects else {
        return Ok(None);
    };
    let id = Uuid::now_v7();
    let object_path = format!("{}/{id}", invoice.tenant_id);
    let key = format!("invoices/{number}.pdf");
    let size_bytes = i64::try_from(pdf.len()).map_err(|e| BillingError::Internal(e.into()))?;
    let sha256 = Sha256::digest(&pdf).to_vec();
    objects
        .put(
            &object_path,
            pdf,
            "application/pdf",
            &format!("attachment; filename=\"{number}.pdf\""),
        )
        .await
        .map_err(|e| BillingError::Internal(anyhow::anyhow!("storing invoice PDF: {e}")))?;
    tollgate_storage::artifacts::insert_document(
        conn,
        &NewArtifact {
            id,
            tenant_id: invoice.tenant_id,
            key,
            object_path,
            size_bytes,
            content_type: "application/pdf".into(),
            sha256,
            workspace_id: None,
            account_id: Some(invoice.account_id),
        },
    )
    .await?;
    Ok(Some(id))
}

/// An invoice as the API shows it. Money is minor units (`*_minor`) and the same amount
/// formatted in major units (`*`), in `currency`.
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceView {
    pub id: String,
    pub number: Option<String>,
    pub status: String,
    pub account: String,
    pub account_external_id: String,
    pub account_name: String,
    pub subscription: Option<String>,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub grace_until: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    /// When the PSP reported the payment that paid it.
    pub paid_at: Option<DateTime<Utc>>,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub total_minor: i64,
    pub subtotal: String,
    pub discount: String,
    pub total: String,
    pub lines: Vec<LineView>,
    pub credit_notes: Vec<CreditNoteView>,
    pub void_reason: Option<String>,
    /// A short-lived signed link to the PDF (finalized invoices).
    pub pdf_url: Option<String>,
    #[serde(skip)]
    issuer_name: String,
}

/// One invoice line.
#[derive(Debug, Clone, Serialize)]
pub struct LineView {
    pub kind: String,
    pub description: String,
    pub metric: Option<String>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub quantity: Option<String>,
    pub unit_price: Option<String>,
    pub amount_minor: i64,
    pub amount: String,
    pub detail: serde_json::Value,
}

/// A credit note.
#[derive(Debug, Clone, Serialize)]
pub struct CreditNoteView {
    pub id: String,
    pub amount_minor: i64,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

impl InvoiceView {
    /// Builds the view of `invoice` (reads the tenant and account names).
    pub async fn build(
        conn: &mut AsyncPgConnection,
        invoice: &InvoiceRow,
        lines: Vec<InvoiceLineRow>,
        notes: Vec<CreditNoteRow>,
        pdf_url: Option<String>,
    ) -> Result<Self, BillingError> {
        let tenant = tollgate_storage::tenants::find_tenant(conn, invoice.tenant_id)
            .await?
            .ok_or_else(|| BillingError::Corrupt("invoice tenant missing".into()))?;
        let account = tollgate_storage::accounts::accounts_by_id(
            conn,
            invoice.tenant_id,
            &[invoice.account_id],
        )
        .await?
        .pop()
        .ok_or_else(|| BillingError::Corrupt("invoice account missing".into()))?;
        Self::from_parts(invoice, lines, notes, pdf_url, &tenant.name, &account)
    }

    /// The view from rows already read: the issuer's (tenant's) name and the invoice's account.
    pub fn from_parts(
        invoice: &InvoiceRow,
        lines: Vec<InvoiceLineRow>,
        notes: Vec<CreditNoteRow>,
        pdf_url: Option<String>,
        issuer_name: &str,
        account: &AccountRow,
    ) -> Result<Self, BillingError> {
        let currency = Currency::from_code(&invoice.currency)
            .map_err(|e| BillingError::Corrupt(e.to_string()))?;
        Ok(Self {
            id: InvoiceId::from_uuid(invoice.id).to_string(),
            number: invoice.number_text.clone(),
            status: invoice.status.clone(),
            account: AccountId::from_uuid(invoice.account_id).to_string(),
            account_external_id: account.external_id.clone(),
            account_name: account.name.clone(),
            subscription: invoice
                .subscription_id
                .map(|s| SubscriptionId::from_uuid(s).to_string()),
            currency: invoice.currency.clone(),
            period_start: invoice.period_start,
            period_end: invoice.period_end,
            grace_until: invoice.grace_until,
            finalized_at: invoice.finalized_at,
            paid_at: invoice.paid_at,
            subtotal_minor: invoice.subtotal_minor,
            discount_minor: invoice.discount_minor,
            total_minor: invoice.total_minor,
            subtotal: major(invoice.subtotal_minor, currency),
            discount: major(invoice.discount_minor, currency),
            total: major(invoice.total_minor, currency),
            lines: lines
                .into_iter()
                .map(|l| LineView {
                    amount: major(l.amount_minor, currency),
                    kind: l.kind,
                    description: l.description,
                    metric: l.metric,
                    period_start: l.period_start,
                    period_end: l.period_end,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    amount_minor: l.amount_minor,
                    detail: l.detail,
                })
                .collect(),
            credit_notes: notes
                .into_iter()
                .map(|n| CreditNoteView {
                    id: tollgate_domain::CreditNoteId::from_uuid(n.id).to_string(),
                    amount_minor: n.amount_minor,
                    reason: n.reason,
                    created_at: n.created_at,
                })
                .collect(),
            void_reason: invoice.void_reason.clone(),
            pdf_url,
            issuer_name: issuer_name.to_owned(),
        })
    }

    /// The PDF's content: the same numbers as the JSON, formatted.
    pub fn document(&self) -> InvoiceDocument {
        let when = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        InvoiceDocument {
            issuer_name: self.issuer_name.clone(),
            number: self.number.clone(),
            status: self.status.clone(),
            customer_name: self.account_name.clone(),
            customer_reference: self.account_external_id.clone(),
            currency: self.currency.clone(),
            period_start: when(self.period_start),
            period_end: when(self.period_end),
            issued_at: self.finalized_at.map(when),
            lines: self
                .lines
                .iter()
                .map(|l| InvoiceLineDoc {
                    description: l.description.clone(),
                    quantity: l.quantity.clone().unwrap_or_default(),
                    unit_price: l.unit_price.clone().unwrap_or_default(),
                    amount: l.amount.clone(),
                    tiers: tier_rows(&l.detail),
                })
                .collect(),
            subtotal: self.subtotal.clone(),
            discount: self.discount.clone(),
            total: self.total.clone(),
        }
    }
}

fn tier_rows(detail: &serde_json::Value) -> Vec<TierLineDoc> {
    let Some(tiers) = detail.get("tiers").and_then(|t| t.as_array()) else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .or_else(|| x.as_i64().map(|n| n.to_string()))
            })
            .unwrap_or_default()
    };
    tiers
        .iter()
        .map(|t| {
            let upto = t.get("up_to").and_then(|u| u.as_str()).unwrap_or("∞");
            TierLineDoc {
                label: format!("{} – {}", text(t, "from"), upto),
                quantity: text(t, "quantity"),
                unit_price: text(t, "unit_price"),
                amount: text(t, "amount"),
            }
        })
        .collect()
}

/// Voids a final, unpaid invoice with a reason (1 to 500 characters); the invoice's numbers
/// stay as they were. Its dunning case, if any, is canceled with its scheduled retries (and the
/// subscription moves accordingly). Errors: a bad reason (422), not found (404), not voidable
/// (409 INVOICE_STATE), a payment of it pending or processing (409 PAYMENT_IN_FLIGHT: were it
/// voided, a payment already at the PSP could still succeed and charge the customer for a void
/// invoice; retry once the payment is decided, which makes the invoice paid or leaves it
/// voidable; a pending payment not sent yet counts too, as the collector sends it within
/// seconds). The check runs under the invoice's row lock, which dunning also takes before it
/// starts a retry, so no payment can start between the check and the void.
pub async fn void(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    invoice_id: Uuid,
    reason: &str,
) -> Result<(), BillingError> {
    use diesel_async::AsyncConnection;
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.len() > 500 {
        return Err(BillingError::Invalid(
            "reason must be 1 to 500 characters".into(),
        ));
    }
    conn.transaction(async move |conn| {
        let Some(invoice) = invoices::find(conn, tenant_id, invoice_id, true).await? else {
            return Err(BillingError::InvoiceNotFound);
        };
        // Only a voidable invoice gets this answer; a paid or draft one is refused below.
        let voidable = matches!(invoice.status.as_str(), "finalized" | "uncollectible");
        if voidable && tollgate_storage::payments::has_payment_in_flight(conn, invoice.id).await? {
            return Err(BillingError::PaymentInFlight);
        }
        invoices::void(conn, tenant_id, invoice_id, &reason)
            .await
            .map_err(|e| match e {
                tollgate_storage::StorageError::NotFound => BillingError::InvoiceState(
                    "cannot be voided: only finalized, unpaid invoices can".into(),
                ),
                other => other.into(),
            })?;
        crate::dunning::on_void(ctx, conn, &invoice, Utc::now()).await
    })
    .await
}

/// What is left to collect on `invoice`, minor units: its total less its credit notes (a
/// credit note issued after finalization lowers what the customer owes).
pub(crate) async fn amount_due(
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
) -> Result<i64, BillingError> {
    let credited: i64 = invoices::credit_notes_of(conn, invoice.id)
        .await?
        .iter()
        .map(|note| note.amount_minor)
        .sum();
    Ok(invoice.total_minor - credited)
}

/// Issues a credit note against a final invoice: `amount_minor` > 0, at most what the invoice
/// total less earlier credit notes leaves, with a reason. The invoice itself never changes.
/// Errors: not found (404), a draft or void invoice (409 INVOICE_STATE), a bad amount or
/// reason (422).
pub async fn credit(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    invoice_id: Uuid,
    amount_minor: i64,
    reason: &str,
) -> Result<CreditNoteRow, BillingError> {
    use diesel_async::AsyncConnection;
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.len() > 500 {
        return Err(BillingError::Invalid(
            "reason must be 1 to 500 characters".into(),
        ));
    }
    conn.transaction(async move |conn| {
        let invoice = invoices::find(conn, tenant_id, invoice_id, true)
            .await?
            .ok_or(BillingError::InvoiceNotFound)?;
        if !matches!(
            invoice.status.as_str(),
            "finalized" | "paid" | "uncollectible"
        ) {
            return Err(BillingError::InvoiceState(format!(
                "is {}: credit notes apply to final invoices",
                invoice.status
            )));
        }
        let left = amount_due(conn, &invoice).await?;
        if amount_minor <= 0 || amount_minor > left {
            return Err(BillingError::Invalid(format!(
                "amount_minor must be between 1 and {left} (the total less earlier credit notes)"
            )));
        }
        let note = CreditNoteRow {
            id: Uuid::now_v7(),
            tenant_id,
            invoice_id,
            amount_minor,
            reason,
            created_at: Utc::now(),
        };
        invoices::insert_credit_note(conn, &note).await?;
        Ok(note)
    })
    .await
}
