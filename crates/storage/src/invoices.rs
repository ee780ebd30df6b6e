//! Invoices (issue 4, "Billing runs", "Invoice PDF"): drafts the billing run writes and
//! rewrites during their grace window, finalization with a gapless number per issuer, and the
//! read side. The database itself refuses changes to a finalized invoice or its lines
//! (triggers in the billing migration); this module never tries.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::{credit_notes, invoice_sequences, invoices, tenants};
use crate::StorageError;

/// An invoice header. Money is minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = invoices)]
pub struct InvoiceRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub account_id: Uuid,
    pub subscription_id: Option<Uuid>,
    pub plan_version_id: Option<Uuid>,
    /// `draft`, `finalized`, `paid`, `void` or `uncollectible`.
    pub status: String,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// The period's natural end (after `period_end` when a cancellation cut it short).
    pub full_period_end: DateTime<Utc>,
    /// The subscription's paid-period number.
    pub period_index: i32,
    /// Until this instant the draft is recomputed (late usage); then it is finalized.
    pub grace_until: DateTime<Utc>,
    pub number: Option<i64>,
    pub number_text: Option<String>,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub total_minor: i64,
    pub pdf_artifact_id: Option<Uuid>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An invoice line. `quantity` and `unit_price` are decimal strings; `amount_minor` was
/// rounded once (half-even) by the pricing engine.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct InvoiceLineRow {
    #[diesel(sql_type = Int4)]
    pub position: i32,
    /// `base_fee`, `proration`, `usage`, `adjustment` or `discount`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub metric: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub period_start: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub period_end: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub quantity: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub unit_price: Option<String>,
    #[diesel(sql_type = Int8)]
    pub amount_minor: i64,
    /// Tier breakdown and rating detail.
    #[diesel(sql_type = Jsonb)]
    pub detail: serde_json::Value,
}

/// Creates a draft with its lines unless the subscription already has an invoice for the
/// period (`UNIQUE (subscription_id, period_start)`). Returns false when it existed: a rerun of
/// a billing run is a no-op, never a second invoice.
pub async fn insert_draft(
    conn: &mut AsyncPgConnection,
    invoice: &InvoiceRow,
    lines: &[InvoiceLineRow],
) -> Result<bool, StorageError> {
    let inserted = insert_drafts(conn, &[(invoice.clone(), lines.to_vec())]).await?;
    Ok(!inserted.is_empty())
}

/// Creates many drafts at once (one statement for the headers, one for all lines), skipping
/// every one whose subscription period already has an invoice. Returns the ids inserted.
pub async fn insert_drafts(
    conn: &mut AsyncPgConnection,
    drafts: &[(InvoiceRow, Vec<InvoiceLineRow>)],
) -> Result<Vec<Uuid>, StorageError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let headers: Vec<&InvoiceRow> = drafts.iter().map(|(h, _)| h).collect();
    let inserted: Vec<Uuid> = diesel::insert_into(invoices::table)
        .values(headers)
        .on_conflict_do_nothing()
        .returning(invoices::id)
        .get_results(conn)
        .await?;
    let keep: std::collections::HashSet<Uuid> = inserted.iter().copied().collect();
    let lines: Vec<(Uuid, &InvoiceLineRow)> = drafts
        .iter()
        .filter(|(h, _)| keep.contains(&h.id))
        .flat_map(|(h, lines)| lines.iter().map(move |l| (h.id, l)))
        .collect();
    insert_line_rows(conn, &lines).await?;
    Ok(inserted)
}

async fn insert_lines(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
    lines: &[InvoiceLineRow],
) -> Result<(), StorageError> {
    let rows: Vec<(Uuid, &InvoiceLineRow)> = lines.iter().map(|l| (invoice_id, l)).collect();
    insert_line_rows(conn, &rows).await
}

async fn insert_line_rows(
    conn: &mut AsyncPgConnection,
    lines: &[(Uuid, &InvoiceLineRow)],
) -> Result<(), StorageError> {
    if lines.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO invoice_lines (invoice_id, position, kind, description, metric, period_start, \
             period_end, quantity, unit_price, amount_minor, detail) \
         SELECT l.invoice_id, l.position, l.kind, l.description, l.metric, l.ps, l.pe, \
                l.quantity::numeric, l.unit_price::numeric, l.amount, l.detail \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
                     $7::timestamptz[], $8::text[], $9::text[], $10::int8[], $11::jsonb[]) \
              AS l (invoice_id, position, kind, description, metric, ps, pe, quantity, unit_price, amount, detail)",
    )
    .bind::<Array<SqlUuid>, _>(lines.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind::<Array<Int4>, _>(lines.iter().map(|(_, l)| l.position).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(lines.iter().map(|(_, l)| l.kind.clone()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(lines.iter().map(|(_, l)| l.description.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(lines.iter().map(|(_, l)| l.metric.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(lines.iter().map(|(_, l)| l.period_start).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(lines.iter().map(|(_, l)| l.period_end).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(lines.iter().map(|(_, l)| l.quantity.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(lines.iter().map(|(_, l)| l.unit_price.clone()).collect::<Vec<_>>())
    .bind::<Array<Int8>, _>(lines.iter().map(|(_, l)| l.amount_minor).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(lines.iter().map(|(_, l)| l.detail.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces a draft's lines and totals (late usage inside the grace window). The database
/// refuses it once the invoice is finalized.
pub async fn rewrite_draft(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
    lines: &[InvoiceLineRow],
    totals: (i64, i64, i64),
) -> Result<(), StorageError> {
    diesel::sql_query("DELETE FROM invoice_lines WHERE invoice_id = $1")
        .bind::<SqlUuid, _>(invoice_id)
        .execute(conn)
        .await?;
    insert_lines(conn, invoice_id, lines).await?;
    diesel::update(invoices::table.find(invoice_id))
        .set((
            invoices::subtotal_minor.eq(totals.0),
            invoices::discount_minor.eq(totals.1),
            invoices::total_minor.eq(totals.2),
            invoices::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the issuer's next invoice number under the sequence row's lock; the caller's
/// transaction either commits the invoice with it or gives it back (gapless). Returns the
/// number and its text (`<prefix>-000042`).
pub async fn next_number(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<(i64, String), StorageError> {
    let number: i64 = diesel::insert_into(invoice_sequences::table)
        .values((
            invoice_sequences::tenant_id.eq(tenant_id),
            invoice_sequences::last_number.eq(1),
        ))
        .on_conflict(invoice_sequences::tenant_id)
        .do_update()
        .set(invoice_sequences::last_number.eq(invoice_sequences::last_number + 1))
        .returning(invoice_sequences::last_number)
        .get_result(conn)
        .await?;
    let prefix: String = tenants::table
        .find(tenant_id)
        .select(tenants::invoice_prefix)
        .first(conn)
        .await?;
    Ok((number, format!("{prefix}-{number:06}")))
}

/// Moves a draft to `finalized` with its number (from [`next_number`], same transaction) and
/// PDF artifact. From here on the database refuses any change but payment or voiding.
pub async fn mark_finalized(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
    number: (i64, String),
    pdf_artifact_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    let updated = diesel::update(invoices::table.find(invoice_id))
        .filter(invoices::status.eq("draft"))
        .set((
            invoices::status.eq("finalized"),
            invoices::number.eq(number.0),
            invoices::number_text.eq(number.1),
            invoices::pdf_artifact_id.eq(pdf_artifact_id),
            invoices::finalized_at.eq(at),
            invoices::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    if updated == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

/// One invoice of a tenant; `lock` takes a row lock (inside a transaction).
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<InvoiceRow>, StorageError> {
    let query = invoices::table
        .filter(invoices::tenant_id.eq(tenant_id))
        .filter(invoices::id.eq(id))
        .select(InvoiceRow::as_select());
    Ok(if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    })
}

/// An invoice's lines in order.
pub async fn lines(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
) -> Result<Vec<InvoiceLineRow>, StorageError> {
    Ok(diesel::sql_query(
        "SELECT position, kind, description, metric, period_start, period_end, \
                quantity::text AS quantity, unit_price::text AS unit_price, amount_minor, detail \
         FROM invoice_lines WHERE invoice_id = $1 ORDER BY position",
    )
    .bind::<SqlUuid, _>(invoice_id)
    .load(conn)
    .await?)
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    pub account_id: Option<Uuid>,
    pub subscription_id: Option<Uuid>,
    pub status: Option<String>,
    /// Invoices whose period starts at or after this instant.
    pub period_from: Option<DateTime<Utc>>,
    /// Invoices whose period starts before this instant.
    pub period_to: Option<DateTime<Utc>>,
}

/// A tenant's invoices, newest first (ids are UUIDv7), after the cursor `before`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    filter: &InvoiceFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<InvoiceRow>, StorageError> {
    let mut query = invoices::table
        .filter(invoices::tenant_id.eq(tenant_id))
        .select(InvoiceRow::as_select())
        .order(invoices::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(account) = filter.account_id {
        query = query.filter(invoices::account_id.eq(account));
    }
    if let Some(sub) = filter.subscription_id {
        query = query.filter(invoices::subscription_id.eq(sub));
    }
    if let Some(status) = &filter.status {
        query = query.filter(invoices::status.eq(status.clone()));
    }
    if let Some(from) = filter.period_from {
        query = query.filter(invoices::period_start.ge(from));
    }
    if let Some(to) = filter.period_to {
        query = query.filter(invoices::period_start.lt(to));
    }
    if let Some(before) = before {
        query = query.filter(invoices::id.lt(before));
    }
    Ok(query.load(conn).await?)
}

/// Drafts (any tenant, or one) whose grace window is still open at `as_of` (`closed` false)
/// or has closed (`closed` true), in id order after `after`, locked with `SKIP LOCKED` so
/// concurrent runs split the work. Call inside a transaction.
pub async fn claim_drafts(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    as_of: DateTime<Utc>,
    closed: bool,
    limit: i64,
    after: Option<Uuid>,
) -> Result<Vec<InvoiceRow>, StorageError> {
    let window = if closed {
        "grace_until <= $2"
    } else {
        "grace_until > $2"
    };
    Ok(diesel::sql_query(format!(
        "SELECT * FROM invoices WHERE status = 'draft' AND {window} \
           AND ($1::uuid IS NULL OR tenant_id = $1) AND ($3::uuid IS NULL OR id > $3) \
         ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED"
    ))
    .bind::<Nullable<SqlUuid>, _>(tenant_id)
    .bind::<Timestamptz, _>(as_of)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<Int8, _>(limit)
    .load(conn)
    .await?)
}

/// What was billed so far for one earlier period of a subscription, per metric: the sum of
/// usage and adjustment line quantities and amounts on invoices that are final (finalized,
/// paid or uncollectible; void invoices bill nothing). Drafts are excluded.
#[derive(Debug, Clone, QueryableByName)]
pub struct BilledUsage {
    #[diesel(sql_type = SqlUuid)]
    pub subscription_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub period_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub period_end: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub metric: String,
    #[diesel(sql_type = Text)]
    pub quantity: String,
    #[diesel(sql_type = Int8)]
    pub amount_minor: i64,
    /// The plan version the period was rated with.
    #[diesel(sql_type = SqlUuid)]
    pub plan_version_id: Uuid,
    /// The invoice description of the charge.
    #[diesel(sql_type = Text)]
    pub description: String,
}

/// [`BilledUsage`] of these subscriptions for every final period that started at or after
/// `since` and before the subscription's own `before` instant (its current invoice's period).
pub async fn billed_usage(
    conn: &mut AsyncPgConnection,
    subscription_ids: &[Uuid],
    befores: &[DateTime<Utc>],
    since: DateTime<Utc>,
) -> Result<Vec<BilledUsage>, StorageError> {
    if subscription_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(diesel::sql_query(
        "SELECT p.subscription_id, l.period_start, l.period_end, l.metric, \
                SUM(l.quantity)::text AS quantity, SUM(l.amount_minor)::int8 AS amount_minor, \
                o.plan_version_id, MIN(l.description) FILTER (WHERE l.kind = 'usage') AS description \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS p (subscription_id, before) \
         JOIN invoices i ON i.subscription_id = p.subscription_id \
          AND i.status IN ('finalized', 'paid', 'uncollectible') \
         JOIN invoice_lines l ON l.invoice_id = i.id AND l.kind IN ('usage', 'adjustment') \
          AND l.metric IS NOT NULL AND l.period_start >= $3 AND l.period_start < p.before \
         JOIN invoices o ON o.subscription_id = p.subscription_id AND o.period_start = l.period_start \
         GROUP BY p.subscription_id, l.period_start, l.period_end, l.metric, o.plan_version_id \
         HAVING COUNT(*) FILTER (WHERE l.kind = 'usage') > 0 \
         ORDER BY p.subscription_id, l.period_start, l.metric",
    )
    .bind::<Array<SqlUuid>, _>(subscription_ids)
    .bind::<Array<Timestamptz>, _>(befores)
    .bind::<Timestamptz, _>(since)
    .load(conn)
    .await?)
}

/// Voids a finalized (or uncollectible) invoice with a reason. Errors:
/// [`StorageError::NotFound`] when no such invoice is in a voidable state.
pub async fn void(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    invoice_id: Uuid,
    reason: &str,
) -> Result<(), StorageError> {
    let updated = diesel::update(invoices::table)
        .filter(invoices::tenant_id.eq(tenant_id))
        .filter(invoices::id.eq(invoice_id))
        .filter(invoices::status.eq_any(["finalized", "uncollectible"]))
        .set((
            invoices::status.eq("void"),
            invoices::voided_at.eq(Utc::now()),
            invoices::void_reason.eq(reason),
            invoices::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    if updated == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

/// A credit note against an invoice.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = credit_notes)]
pub struct CreditNoteRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub invoice_id: Uuid,
    pub amount_minor: i64,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// Inserts a credit note.
pub async fn insert_credit_note(
    conn: &mut AsyncPgConnection,
    note: &CreditNoteRow,
) -> Result<(), StorageError> {
    diesel::insert_into(credit_notes::table)
        .values(note)
        .execute(conn)
        .await?;
    Ok(())
}

/// Credit notes of an invoice, oldest first.
pub async fn credit_notes_of(
    conn: &mut AsyncPgConnection,
    invoice_id: Uuid,
) -> Result<Vec<CreditNoteRow>, StorageError> {
    Ok(credit_notes::table
        .filter(credit_notes::invoice_id.eq(invoice_id))
        .order(credit_notes::created_at.asc())
        .select(CreditNoteRow::as_select())
        .load(conn)
        .await?)
}
