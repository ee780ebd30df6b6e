//! billing's HTTP API (behind the gateway, tenant from `x-tollgate-tenant`):
//!
//! | route | what |
//! |---|---|
//! | `PUT /v1/catalog` | apply a catalog (JSON, the TOML file's shape) |
//! | `GET /v1/plans` | current plan versions |
//! | `POST /v1/subscriptions` | `{account, plan, start_at?, skip_trial?, coupon?}` |
//! | `GET /v1/subscriptions[?account=]`, `GET /v1/subscriptions/{id}` | read |
//! | `POST /v1/subscriptions/{id}/change` | `{plan, when: now\|period_end}` |
//! | `POST /v1/subscriptions/{id}/cancel` | `{when: now\|period_end, reason?}` |
//! | `POST /v1/subscriptions/{id}/resume` | undo a scheduled cancellation or change |
//! | `GET /v1/invoices[?account=&status=&cursor=&limit=&format=csv]` | list / CSV export |
//! | `GET /v1/invoices/{id}` | JSON; `Accept: application/pdf` or `?format=pdf` → 303 to the signed PDF link |
//! | `POST /v1/invoices/{id}/void` | `{reason}` |
//! | `POST /v1/invoices/{id}/credit_notes` | `{amount_minor, reason}` |
//! | `POST /v1/billing/runs` | a billing pass for the tenant now |
//! | `POST /v1/invoices/{id}/refund` | `{amount_minor?, reason}` + `Idempotency-Key` (required: 400 IDEMPOTENCY_KEY_REQUIRED without) → refund through Stripe; a repeat returns the first refund |
//! | `GET /v1/invoices/{id}/payments` | the invoice's payments and dunning case |
//! | `POST /v1/billing/checkout` | `{account_id \| account, success_url, cancel_url}` → `{url, session_id, customer}` |
//! | `POST /v1/billing/portal` | `{account_id \| account, return_url}` → `{url, customer}` |
//! | `POST /v1/billing/dunning/runs` | `{as_of?}` (not in the future) → the tenant's due retries now |
//! | `GET /v1/billing/dunning/cases[?status=&limit=]` | dunning cases with retries and notifications |

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::{AccountId, InvoiceId, SubscriptionId};
use tollgate_storage::invoices::{self, InvoiceFilter};
use tollgate_storage::subscriptions::SubscriptionRow;
use uuid::Uuid;

use crate::catalog::CatalogDefinition;
use crate::invoicing::InvoiceView;
use crate::run::PlanCache;
use crate::subscriptions::{self as subs, StartRequest, When};
use crate::{AppState, BillingError};

/// Mounts the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/catalog", web::put().to(apply_catalog))
        .route("/v1/plans", web::get().to(list_plans))
        .route("/v1/subscriptions", web::post().to(start_subscription))
        .route("/v1/subscriptions", web::get().to(list_subscriptions))
        .route("/v1/subscriptions/{id}", web::get().to(get_subscription))
        .route(
            "/v1/subscriptions/{id}/change",
            web::post().to(change_subscription),
        )
        .route(
            "/v1/subscriptions/{id}/cancel",
            web::post().to(cancel_subscription),
        )
        .route(
            "/v1/subscriptions/{id}/resume",
            web::post().to(resume_subscription),
        )
        .route("/v1/invoices", web::get().to(list_invoices))
        .route("/v1/invoices/{id}", web::get().to(get_invoice))
        .route("/v1/invoices/{id}/void", web::post().to(void_invoice))
        .route(
            "/v1/invoices/{id}/credit_notes",
            web::post().to(credit_invoice),
        )
        .route("/v1/billing/runs", web::post().to(billing_run))
        .route("/v1/invoices/{id}/refund", web::post().to(refund_invoice))
        .route(
            "/v1/invoices/{id}/payments",
            web::get().to(invoice_payments),
        )
        .route("/v1/billing/checkout", web::post().to(checkout))
        .route("/v1/billing/portal", web::post().to(portal))
        .route("/v1/billing/dunning/runs", web::post().to(dunning_run))
        .route("/v1/billing/dunning/cases", web::get().to(dunning_cases));
}

/// The tenant the gateway authenticated, after checking the internal token (401 otherwise).
fn tenant(req: &HttpRequest, state: &AppState) -> Result<Uuid, BillingError> {
    tollgate_runtime::http::forwarded_tenant(req, &state.internal_token)
        .map(|t| t.as_uuid())
        .ok_or(BillingError::Unauthenticated)
}

async fn conn(state: &AppState) -> Result<tollgate_storage::PooledConn, BillingError> {
    Ok(tollgate_storage::pool::get(&state.context.pool).await?)
}

async fn apply_catalog(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CatalogDefinition>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let mut conn = conn(&state).await?;
    let applied = body.apply(&mut conn, tenant).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "plans": applied })))
}

/// A plan version as the API shows it.
#[derive(Serialize)]
struct PlanView {
    code: String,
    version: i32,
    name: String,
    interval: String,
    currency: String,
    base_fee_minor: i64,
    trial_days: i32,
    features: Vec<String>,
    definition: serde_json::Value,
}

async fn list_plans(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let mut conn = conn(&state).await?;
    let plans = tollgate_storage::plans::current_versions(&mut conn, tenant).await?;
    let data: Vec<PlanView> = plans
        .into_iter()
        .map(|p| PlanView {
            code: p.version.plan_code,
            version: p.version.version,
            name: p.version.name,
            interval: p.version.billing_interval,
            currency: p.version.currency,
            base_fee_minor: p.version.base_fee_minor,
            trial_days: p.version.trial_days,
            features: p.version.features,
            definition: p.version.definition,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data })))
}

/// A subscription as the API shows it.
#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub account: String,
    pub plan: String,
    pub plan_version: i32,
    pub status: String,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    /// The plan applied at period end, when a change is scheduled.
    pub pending_plan: Option<String>,
    /// After a downgrade: until when the previous plan's entitlements still apply.
    pub grace_until: Option<DateTime<Utc>>,
    pub coupon: Option<String>,
}

async fn view(
    conn: &mut tollgate_storage::AsyncPgConnection,
    sub: &SubscriptionRow,
) -> Result<SubscriptionView, BillingError> {
    view_with(conn, sub, &mut PlanCache::default()).await
}

/// [`view`] with plan versions from `plans` (a list reads each version once).
async fn view_with(
    conn: &mut tollgate_storage::AsyncPgConnection,
    sub: &SubscriptionRow,
    plans: &mut PlanCache,
) -> Result<SubscriptionView, BillingError> {
    let plan = plans.get(conn, sub.plan_version_id).await?.version.clone();
    let pending = match sub.pending_plan_version_id {
        Some(id) => Some(plans.get(conn, id).await?.version.plan_code.clone()),
        None => None,
    };
    Ok(SubscriptionView {
        id: SubscriptionId::from_uuid(sub.id).to_string(),
        account: AccountId::from_uuid(sub.account_id).to_string(),
        plan: plan.plan_code,
        plan_version: plan.version,
        status: sub.status.clone(),
        current_period_start: sub.current_period_start,
        current_period_end: sub.current_period_end,
        trial_end: sub.trial_end,
        cancel_at_period_end: sub.cancel_at_period_end,
        canceled_at: sub.canceled_at,
        pending_plan: pending,
        grace_until: sub.grace_until,
        coupon: sub.coupon_code.clone(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// The account's external id.
    account: String,
    plan: String,
    #[serde(default)]
    start_at: Option<DateTime<Utc>>,
    #[serde(default)]
    skip_trial: bool,
    #[serde(default)]
    coupon: Option<String>,
}

async fn start_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<StartBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let body = body.into_inner();
    let mut conn = conn(&state).await?;
    let account = tollgate_storage::accounts::find_account(&mut conn, tenant, &body.account)
        .await?
        .ok_or_else(|| BillingError::UnknownAccount(body.account.clone()))?;
    let sub = subs::start(
        &state.context,
        &mut conn,
        StartRequest {
            tenant_id: tenant,
            account_id: account.id,
            plan: body.plan,
            start_at: body.start_at.unwrap_or_else(Utc::now),
            skip_trial: body.skip_trial,
            coupon: body.coupon,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(view(&mut conn, &sub).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

fn limit(raw: Option<i64>) -> Result<i64, BillingError> {
    match raw.unwrap_or(50) {
        n @ 1..=500 => Ok(n),
        _ => Err(BillingError::Invalid(
            "limit must be between 1 and 500".into(),
        )),
    }
}

async fn account_filter(
    conn: &mut tollgate_storage::AsyncPgConnection,
    tenant: Uuid,
    account: Option<&str>,
) -> Result<Option<Uuid>, BillingError> {
    match account {
        None => Ok(None),
        Some(external) => Ok(Some(
            tollgate_storage::accounts::find_account(conn, tenant, external)
                .await?
                .ok_or_else(|| BillingError::UnknownAccount(external.to_owned()))?
                .id,
        )),
    }
}

async fn list_subscriptions(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let limit = limit(query.limit)?;
    let before = match &query.cursor {
        Some(c) => Some(
            c.parse::<SubscriptionId>()
                .map_err(|e| BillingError::Invalid(e.to_string()))?
                .as_uuid(),
        ),
        None => None,
    };
    let mut conn = conn(&state).await?;
    let account = account_filter(&mut conn, tenant, query.account.as_deref()).await?;
    let rows =
        tollgate_storage::subscriptions::list(&mut conn, tenant, account, before, limit).await?;
    let mut data = Vec::with_capacity(rows.len());
    let mut plans = PlanCache::default();
    for row in &rows {
        data.push(view_with(&mut conn, row, &mut plans).await?);
    }
    let next = (rows.len() as i64 == limit)
        .then(|| data.last().map(|v| v.id.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data, "next_cursor": next })))
}

fn sub_id(raw: &str) -> Result<Uuid, BillingError> {
    raw.parse::<SubscriptionId>()
        .map(|id| id.as_uuid())
        .map_err(|_| BillingError::SubscriptionNotFound)
}

async fn get_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = sub_id(&path)?;
    let mut conn = conn(&state).await?;
    let sub = tollgate_storage::subscriptions::find(&mut conn, tenant, id, false)
        .await?
        .ok_or(BillingError::SubscriptionNotFound)?;
    Ok(HttpResponse::Ok().json(view(&mut conn, &sub).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    plan: String,
    when: When,
}

async fn change_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<ChangeBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = sub_id(&path)?;
    let body = body.into_inner();
    let mut conn = conn(&state).await?;
    let sub = subs::change_plan(
        &state.context,
        &mut conn,
        tenant,
        id,
        body.plan,
        body.when,
        Utc::now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view(&mut conn, &sub).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    when: When,
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CancelBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = sub_id(&path)?;
    let body = body.into_inner();
    let mut conn = conn(&state).await?;
    let sub = subs::cancel(
        &state.context,
        &mut conn,
        tenant,
        id,
        body.when,
        Utc::now(),
        body.reason,
    )
    .await?;
    Ok(HttpResponse::Ok().json(view(&mut conn, &sub).await?))
}

async fn resume_subscription(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = sub_id(&path)?;
    let mut conn = conn(&state).await?;
    let sub = subs::resume(&state.context, &mut conn, tenant, id).await?;
    Ok(HttpResponse::Ok().json(view(&mut conn, &sub).await?))
}

fn invoice_id(raw: &str) -> Result<Uuid, BillingError> {
    raw.parse::<InvoiceId>()
        .map(|id| id.as_uuid())
        .map_err(|_| BillingError::InvoiceNotFound)
}

/// The invoice view with a fresh PDF link.
pub async fn invoice_view(
    state: &AppState,
    conn: &mut tollgate_storage::AsyncPgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<InvoiceView, BillingError> {
    let invoice = invoices::find(conn, tenant, id, false)
        .await?
        .ok_or(BillingError::InvoiceNotFound)?;
    let lines = invoices::lines(conn, id).await?;
    let notes = invoices::credit_notes_of(conn, id).await?;
    let pdf_url = match (invoice.pdf_artifact_id, &state.context.objects) {
        (Some(artifact), Some(objects)) => {
            match tollgate_storage::artifacts::find_by_id(conn, artifact).await? {
                Some(row) => Some(
                    objects
                        .download_link(
                            &tollgate_domain::ArtifactId::from_uuid(row.id).to_string(),
                            &row.object_path,
                        )
                        .await
                        .map_err(|e| BillingError::Internal(e.into()))?
                        .url,
                ),
                None => None,
            }
        }
        _ => None,
    };
    InvoiceView::build(conn, &invoice, lines, notes, pdf_url).await
}

async fn get_invoice(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = invoice_id(&path)?;
    let mut conn = conn(&state).await?;
    let view = invoice_view(&state, &mut conn, tenant, id).await?;
    let wants_pdf = query.format.as_deref() == Some("pdf")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/pdf"));
    if wants_pdf {
        return match &view.pdf_url {
            Some(url) => Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, url.as_str()))
                .finish()),
            None => Err(BillingError::InvoiceState(
                "has no PDF yet: PDFs are rendered when an invoice is finalized".into(),
            )),
        };
    }
    Ok(HttpResponse::Ok().json(view))
}

/// One row of the invoice CSV export.
#[derive(Serialize)]
struct InvoiceCsvRow<'a> {
    id: String,
    number: &'a str,
    status: &'a str,
    account: String,
    currency: &'a str,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    subtotal_minor: i64,
    discount_minor: i64,
    total_minor: i64,
    finalized_at: Option<DateTime<Utc>>,
}

async fn list_invoices(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let csv = query.format.as_deref() == Some("csv")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv"));
    let limit = if csv {
        query.limit.unwrap_or(10_000).clamp(1, 100_000)
    } else {
        limit(query.limit)?
    };
    let before = match &query.cursor {
        Some(c) => Some(
            c.parse::<InvoiceId>()
                .map_err(|e| BillingError::Invalid(e.to_string()))?
                .as_uuid(),
        ),
        None => None,
    };
    let mut conn = conn(&state).await?;
    let filter = InvoiceFilter {
        account_id: account_filter(&mut conn, tenant, query.account.as_deref()).await?,
        status: query.status.clone(),
        ..Default::default()
    };
    let rows = invoices::list(&mut conn, tenant, &filter, before, limit).await?;
    if csv {
        let mut out = csv::Writer::from_writer(Vec::new());
        for r in &rows {
            out.serialize(InvoiceCsvRow {
                id: InvoiceId::from_uuid(r.id).to_string(),
                number: r.number_text.as_deref().unwrap_or(""),
                status: &r.status,
                account: AccountId::from_uuid(r.account_id).to_string(),
                currency: &r.currency,
                period_start: r.period_start,
                period_end: r.period_end,
                subtotal_minor: r.subtotal_minor,
                discount_minor: r.discount_minor,
                total_minor: r.total_minor,
                finalized_at: r.finalized_at,
            })
            .map_err(|e| BillingError::Internal(e.into()))?;
        }
        let body = out
            .into_inner()
            .map_err(|e| BillingError::Internal(anyhow::anyhow!("{e}")))?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(body));
    }
    let issuer = if rows.is_empty() {
        String::new()
    } else {
        tollgate_storage::tenants::find_tenant(&mut conn, tenant)
            .await?
            .ok_or_else(|| BillingError::Corrupt("invoice tenant missing".into()))?
            .name
    };
    let account_ids: Vec<Uuid> = rows.iter().map(|r| r.account_id).collect();
    let accounts: std::collections::HashMap<Uuid, _> =
        tollgate_storage::accounts::accounts_by_id(&mut conn, tenant, &account_ids)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
    let mut data = Vec::with_capacity(rows.len());
    for r in &rows {
        let account = accounts
            .get(&r.account_id)
            .ok_or_else(|| BillingError::Corrupt("invoice account missing".into()))?;
        let lines = invoices::lines(&mut conn, r.id).await?;
        data.push(InvoiceView::from_parts(
            r,
            lines,
            Vec::new(),
            None,
            &issuer,
            account,
        )?);
    }
    let next = (rows.len() as i64 == limit)
        .then(|| data.last().map(|v| v.id.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoidBody {
    reason: String,
}

async fn void_invoice(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<VoidBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = invoice_id(&path)?;
    let mut conn = conn(&state).await?;
    crate::invoicing::void(&state.context, &mut conn, tenant, id, &body.reason).await?;
    Ok(HttpResponse::Ok().json(invoice_view(&state, &mut conn, tenant, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    amount_minor: i64,
    reason: String,
}

async fn credit_invoice(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CreditBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = invoice_id(&path)?;
    let mut conn = conn(&state).await?;
    crate::invoicing::credit(&mut conn, tenant, id, body.amount_minor, &body.reason).await?;
    Ok(HttpResponse::Created().json(invoice_view(&state, &mut conn, tenant, id).await?))
}

async fn billing_run(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let report = crate::run::run(
        &state.context,
        &crate::run::RunOptions {
            tenant: Some(tenant),
            as_of: Utc::now(),
            batch: 500,
            max_close_batches: None,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    /// Minor units; default: everything not yet refunded.
    #[serde(default)]
    amount_minor: Option<i64>,
    reason: String,
}

async fn refund_invoice(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<RefundBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = invoice_id(&path)?;
    let key = req
        .headers()
        .get("idempotency-key")
        .ok_or(BillingError::IdempotencyKeyRequired)?
        .to_str()
        .map_err(|_| BillingError::Invalid("Idempotency-Key must be ASCII".into()))?;
    let refund = crate::payments::refund(
        &state.context,
        tenant,
        id,
        body.amount_minor,
        &body.reason,
        key,
    )
    .await?;
    Ok(HttpResponse::Created().json(crate::payments::RefundView::from(refund)))
}

async fn invoice_payments(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let id = invoice_id(&path)?;
    let mut conn = conn(&state).await?;
    let invoice = invoices::find(&mut conn, tenant, id, false)
        .await?
        .ok_or(BillingError::InvoiceNotFound)?;
    let payments = tollgate_storage::payments::payments_of_invoice(&mut conn, invoice.id).await?;
    let mut refunds = Vec::new();
    for p in &payments {
        refunds.extend(
            tollgate_storage::payments::refunds_of(&mut conn, p.id)
                .await?
                .into_iter()
                .map(crate::payments::RefundView::from),
        );
    }
    let case =
        match tollgate_storage::payments::case_of_invoice(&mut conn, invoice.id, false).await? {
            Some(case) => Some(crate::dunning::CaseView::build(&mut conn, case).await?),
            None => None,
        };
    let data: Vec<crate::payments::PaymentView> = payments
        .into_iter()
        .map(crate::payments::PaymentView::from)
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "invoice": InvoiceId::from_uuid(invoice.id).to_string(),
        "status": invoice.status,
        "paid_at": invoice.paid_at,
        "data": data,
        "refunds": refunds,
        "dunning": case,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    /// `acc_…`
    #[serde(default)]
    account_id: Option<String>,
    /// The account's external id (instead of `account_id`).
    #[serde(default)]
    account: Option<String>,
    success_url: String,
    cancel_url: String,
}

async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CheckoutBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let account = crate::checkout::find_account(
        &state.context,
        tenant,
        body.account_id.as_deref(),
        body.account.as_deref(),
    )
    .await?;
    let view = crate::checkout::checkout(
        &state.context,
        &account,
        &body.success_url,
        &body.cancel_url,
    )
    .await?;
    Ok(HttpResponse::Created().json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalBody {
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    account: Option<String>,
    return_url: String,
}

async fn portal(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<PortalBody>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let account = crate::checkout::find_account(
        &state.context,
        tenant,
        body.account_id.as_deref(),
        body.account.as_deref(),
    )
    .await?;
    let view = crate::checkout::portal(&state.context, &account, &body.return_url).await?;
    Ok(HttpResponse::Created().json(view))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DunningRunBody {
    #[serde(default)]
    as_of: Option<DateTime<Utc>>,
}

/// Runs the tenant's due retries. `as_of` may lie in the past (what was due then), never in
/// the future: running retries early would charge customers early. The test clock is the
/// operator CLI's `tollgatectl dunning run --as-of`.
async fn dunning_run(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Option<web::Json<DunningRunBody>>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let now = Utc::now();
    let as_of = body.and_then(|b| b.into_inner().as_of).unwrap_or(now);
    if as_of > now + chrono::Duration::seconds(5) {
        return Err(BillingError::Invalid(
            "as_of must not be in the future (the operator CLI takes a test clock)".into(),
        ));
    }
    let report = crate::dunning::run(
        &state.context,
        &crate::dunning::DunningRunOptions {
            tenant: Some(tenant),
            as_of,
            batch: state.dunning_batch,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

async fn dunning_cases(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, BillingError> {
    let tenant = tenant(&req, &state)?;
    let limit = limit(query.limit)?;
    let mut conn = conn(&state).await?;
    let rows =
        tollgate_storage::payments::list_cases(&mut conn, tenant, query.status.as_deref(), limit)
            .await?;
    let mut data = Vec::with_capacity(rows.len());
    for row in rows {
        data.push(crate::dunning::CaseView::build(&mut conn, row).await?);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data })))
}
