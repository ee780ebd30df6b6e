//! `/v1/accounts` and `/v1/workspaces`: the billing entities usage is attributed to
//! (SPEC "Usage metering and the ledger", "Security"). Records are addressed by the
//! tenant's own external ids; responses also carry Tollgate's ids (`acc_…`, `ws_…`).
//!
//! * `POST /v1/accounts` `{external_id, name, kind: personal|organization}` → 201.
//! * `GET /v1/accounts/{external_id}` → the account and the workspaces it owns.
//! * `POST /v1/accounts/{external_id}/convert` `{external_id, name}` → 200: the personal
//!   account becomes (is succeeded by) a new organization that takes over its workspaces;
//!   usage from the instant of conversion on is billed to the organization.
//! * `POST /v1/workspaces` `{external_id, name, account}` → 201; 403
//!   PERSONAL_ACCOUNT_WORKSPACE_LIMIT for a personal account's second workspace.
//! * `GET /v1/workspaces/{external_id}` → the workspace and its ownership history.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::{AccountId, WorkspaceId};
use tollgate_storage::accounts;
use tollgate_storage::models::{AccountRow, WorkspaceRow};

use crate::error::{parse_json as parse, AccountError, ApiError};
use crate::jobs::tenant;
use crate::AppState;

/// Mounts the account and workspace routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/accounts", web::post().to(create_account))
        .route("/v1/accounts/{external_id}", web::get().to(get_account))
        .route(
            "/v1/accounts/{external_id}/convert",
            web::post().to(convert_account),
        )
        .route("/v1/workspaces", web::post().to(create_workspace))
        .route("/v1/workspaces/{external_id}", web::get().to(get_workspace));
}

/// Account kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Personal,
    Organization,
}

impl AccountKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Personal => "personal",
            Self::Organization => "organization",
        }
    }
}

/// An account as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountResponse {
    pub id: String,
    pub external_id: String,
    pub kind: String,
    pub name: String,
    /// The organization a converted personal account became.
    pub converted_to: Option<String>,
    /// From this instant on, the account's usage is billed to `converted_to`.
    pub converted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workspaces: Option<Vec<WorkspaceResponse>>,
}

impl AccountResponse {
    fn from_row(row: AccountRow) -> Self {
        Self {
            id: AccountId::from_uuid(row.id).to_string(),
            external_id: row.external_id,
            kind: row.kind,
            name: row.name,
            converted_to: row
                .converted_to
                .map(|id| AccountId::from_uuid(id).to_string()),
            converted_at: row.converted_at,
            created_at: row.created_at,
            workspaces: None,
        }
    }
}

/// A workspace as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceResponse {
    pub id: String,
    pub external_id: String,
    pub name: String,
    /// The current owner.
    pub account_id: String,
    pub created_at: DateTime<Utc>,
    /// Who owned it when (`GET /v1/workspaces/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owners: Option<Vec<OwnerSpan>>,
}

/// One span of ownership, `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerSpan {
    pub account_id: String,
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
}

impl WorkspaceResponse {
    fn from_row(row: WorkspaceRow) -> Self {
        Self {
            id: WorkspaceId::from_uuid(row.id).to_string(),
            external_id: row.external_id,
            name: row.name,
            account_id: AccountId::from_uuid(row.account_id).to_string(),
            created_at: row.created_at,
            owners: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    external_id: String,
    name: String,
    kind: AccountKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvertAccount {
    /// The new organization's external id.
    external_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWorkspace {
    external_id: String,
    name: String,
    /// The owning account's external id.
    account: String,
}

/// The conversion's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversionResponse {
    pub personal: AccountResponse,
    pub organization: AccountResponse,
    pub workspaces: Vec<WorkspaceResponse>,
}

/// The workspace a request names by external id (`None` when it names none). Errors: 422
/// UNKNOWN_WORKSPACE for a name the tenant does not have, 503 when the database is down.
pub(crate) async fn named_workspace(
    state: &AppState,
    tenant: uuid::Uuid,
    external_id: Option<&str>,
) -> Result<Option<WorkspaceRow>, ApiError> {
    let Some(external_id) = external_id else {
        return Ok(None);
    };
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    accounts::find_workspace(&mut conn, tenant, external_id)
        .await?
        .map(Some)
        .ok_or_else(|| ApiError::UnknownWorkspace(external_id.chars().take(200).collect()))
}

/// External ids and names: 1–200 bytes, no control characters.
fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "`{field}` must be 1-200 bytes without control characters"
        )));
    }
    Ok(())
}

async fn create_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let request: CreateAccount = parse(&body)?;
    check_text("external_id", &request.external_id)?;
    check_text("name", &request.name)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = accounts::create_account(
        &mut conn,
        tenant.as_uuid(),
        request.kind.as_str(),
        &request.external_id,
        &request.name,
    )
    .await??;
    Ok(HttpResponse::build(StatusCode::CREATED).json(AccountResponse::from_row(row)))
}

async fn get_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = accounts::find_account(&mut conn, tenant.as_uuid(), &path)
        .await?
        .ok_or(ApiError::Account(AccountError::NotFound))?;
    let owned = accounts::workspaces_of(&mut conn, row.id).await?;
    let mut response = AccountResponse::from_row(row);
    response.workspaces = Some(owned.into_iter().map(WorkspaceResponse::from_row).collect());
    Ok(HttpResponse::Ok().json(response))
}

async fn convert_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let request: ConvertAccount = parse(&body)?;
    check_text("external_id", &request.external_id)?;
    check_text("name", &request.name)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let conversion = accounts::convert_to_organization(
        &mut conn,
        tenant.as_uuid(),
        &path,
        &request.external_id,
        &request.name,
    )
    .await??;
    tracing::info!(
        personal = %AccountId::from_uuid(conversion.personal.id),
        organization = %AccountId::from_uuid(conversion.organization.id),
        workspaces = conversion.workspaces.len(),
        "account converted to an organization"
    );
    Ok(HttpResponse::Ok().json(ConversionResponse {
        personal: AccountResponse::from_row(conversion.personal),
        organization: AccountResponse::from_row(conversion.organization),
        workspaces: conversion
            .workspaces
            .into_iter()
            .map(WorkspaceResponse::from_row)
            .collect(),
    }))
}

async fn create_workspace(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let request: CreateWorkspace = parse(&body)?;
    check_text("external_id", &request.external_id)?;
    check_text("name", &request.name)?;
    check_text("account", &request.account)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = accounts::create_workspace(
        &mut conn,
        tenant.as_uuid(),
        &request.account,
        &request.external_id,
        &request.name,
    )
    .await??;
    Ok(HttpResponse::build(StatusCode::CREATED).json(WorkspaceResponse::from_row(row)))
}

async fn get_workspace(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = accounts::find_workspace(&mut conn, tenant.as_uuid(), &path)
        .await?
        .ok_or(ApiError::Account(AccountError::WorkspaceNotFound))?;
    let history = accounts::ownership(&mut conn, &[row.id]).await?;
    let mut response = WorkspaceResponse::from_row(row);
    response.owners = Some(
        history
            .into_iter()
            .map(|span| OwnerSpan {
                account_id: AccountId::from_uuid(span.account_id).to_string(),
                from: span.valid_from,
                to: span.valid_to,
            })
            .collect(),
    );
    Ok(HttpResponse::Ok().json(response))
}
