//! `/v1/artifacts` and `/v1/downloads`: job artifacts in object storage, metered as +bytes on
//! write and −bytes on delete (SPEC "Jobs" → Results, "Usage metering and the ledger").
//!
//! The bytes live in an `object_store` (a local directory by default, S3 or GCS by
//! configuration) under `<tenant uuid>/<artifact uuid>`, so a new version never overwrites the
//! bytes of one still referenced. The rows and the ledger entries are written by
//! `tollgate_storage::artifacts`, one transaction per change. Downloads go through short-lived
//! signed URLs: the store's own (S3/GCS) or, for a local directory, links to
//! `GET /v1/downloads/{id}` signed with HMAC-SHA256, which the gateway forwards unauthenticated.

use actix_web::http::header::{
    self, Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue,
};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_domain::{ArtifactId, TenantId};
use tollgate_objects::{DownloadLink, Objects};
use tollgate_storage::artifacts::{self as rows, ArtifactRow, NewArtifact};
use uuid::Uuid;

use crate::config::ArtifactsConfig;
use crate::error::ApiError;
use crate::jobs::tenant;
use crate::AppState;

/// The signature of a local download link (tests forge links with it).
pub use tollgate_objects::sign_download;

/// Longest artifact key, characters (the `artifacts.key` CHECK constraint).
pub const MAX_KEY_CHARS: usize = 512;
/// Longest stored `Content-Type`, bytes.
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Mounts the artifact and download routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/artifacts", web::get().to(list))
        .route("/v1/artifacts/{key:.*}", web::put().to(put))
        .route("/v1/artifacts/{key:.*}", web::get().to(get))
        .route("/v1/artifacts/{key:.*}", web::delete().to(delete))
        .route("/v1/downloads/{id}", web::get().to(download));
}

/// A tenant's name for an artifact: 1–512 characters, no leading `/`, no `..` segment, no
/// control characters. Only stored in the database, never used as a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactKey(String);

impl ArtifactKey {
    /// Checks `raw`; the error says which rule it breaks.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let invalid = |why: &str| Err(ApiError::InvalidArtifactKey(why.to_owned()));
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return invalid("must be 1-512 characters");
        }
        if raw.starts_with('/') {
            return invalid("must not start with `/`");
        }
        if raw.split('/').any(|segment| segment == "..") {
            return invalid("must not contain a `..` segment");
        }
        if raw.chars().any(char::is_control) {
            return invalid("must not contain control characters");
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last `/`-separated segment: the file name downloads are offered under.
    pub fn file_name(&self) -> &str {
        file_name(&self.0)
    }
}

fn file_name(key: &str) -> &str {
    match key.rsplit('/').next() {
        Some(last) if !last.is_empty() => last,
        _ => "artifact",
    }
}

/// The artifact object store and how download links are made. Built once at start-up.
pub struct ArtifactStore {
    objects: Objects,
    /// Largest artifact accepted, bytes.
    max_bytes: usize,
}

impl ArtifactStore {
    /// Opens the store `config` names (see [`Objects::open`]); artifacts are capped at
    /// `max_bytes` bytes. Errors: the directory cannot be created, or the bucket settings are
    /// unusable.
    pub fn from_config(config: &ArtifactsConfig, max_bytes: usize) -> anyhow::Result<Self> {
        let objects = Objects::open(config).context("artifacts")?;
        Ok(Self { objects, max_bytes })
    }

    /// A fresh download link for `row`, valid for the configured TTL (seconds).
    async fn download_link(&self, row: &ArtifactRow) -> Result<DownloadLink, ApiError> {
        let id = ArtifactId::from_uuid(row.id).to_string();
        self.objects
            .download_link(&id, &row.object_path)
            .await
            .map_err(ApiError::ArtifactStoreUnavailable)
    }

    /// Removes an object no row references any more. Best effort: a failure is logged (the
    /// bytes are orphaned, not metered) and never reaches the client.
    async fn remove_object(&self, object_path: &str) {
        self.objects.remove(object_path).await;
    }
}

/// `Content-Disposition: attachment` with the key's last segment as file name (RFC 6266;
/// `filename*` in UTF-8 as well when the name is not ASCII).
fn content_disposition(key: &str) -> ContentDisposition {
    let name = file_name(key);
    let mut parameters = vec![DispositionParam::Filename(
        name.chars()
            .map(|c| if c.is_ascii() { c } else { '_' })
            .collect(),
    )];
    if !name.is_ascii() {
        parameters.push(DispositionParam::FilenameExt(ExtendedValue {
            charset: Charset::Ext("UTF-8".to_owned()),
            language_tag: None,
            value: name.as_bytes().to_vec(),
        }));
    }
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters,
    }
}

/// An artifact as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArtifactResponse {
    /// `art_…`: this stored version (a new upload of the key gets a new id).
    pub id: String,
    pub key: String,
    pub size_bytes: i64,
    pub content_type: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    /// A signed link to the bytes; absent in lists (ask for the artifact to get one).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub download_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub download_expires_at: Option<DateTime<Utc>>,
}

impl ArtifactResponse {
    fn from_row(row: ArtifactRow, link: Option<DownloadLink>) -> Self {
        Self {
            id: ArtifactId::from_uuid(row.id).to_string(),
            key: row.key,
            size_bytes: row.size_bytes,
            content_type: row.content_type,
            sha256: hex::encode(&row.sha256),
            created_at: row.created_at,
            download_expires_at: link.as_ref().map(|l| l.expires_at),
            download_url: link.map(|l| l.url),
        }
    }
}

/// A page of artifacts.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArtifactListResponse {
    pub data: Vec<ArtifactResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An upload, parsed.
pub struct Upload {
    pub tenant: TenantId,
    pub key: ArtifactKey,
    pub content_type: String,
    /// The external id of the tenant's workspace the bytes belong to.
    pub workspace: Option<String>,
    pub body: web::Bytes,
}

/// Stores an upload: resolves the workspace (422 `UNKNOWN_WORKSPACE`, nothing written), writes
/// the object, then commits the row and its +size ledger entry (replacing a live version of
/// the key, whose −size entry commits alongside). If the commit fails the object is removed,
/// best effort. After the commit the replaced version's object is removed, best effort.
pub async fn put_artifact(state: &AppState, upload: Upload) -> Result<ArtifactRow, ApiError> {
    let tenant_id = upload.tenant.as_uuid();
    let workspace =
        crate::accounts::named_workspace(state, tenant_id, upload.workspace.as_deref()).await?;

    let store = &state.artifacts;
    let id = Uuid::now_v7();
    let object_path = format!("{tenant_id}/{id}");
    let sha256 = Sha256::digest(&upload.body).to_vec();
    let size_bytes = i64::try_from(upload.body.len()).map_err(|e| ApiError::Internal(e.into()))?;
    // Cloud stores hand the type and disposition back on signed downloads; a local directory
    // cannot keep them (the download handler sets them from the row instead).
    store
        .objects
        .put(
            &object_path,
            upload.body,
            &upload.content_type,
            &content_disposition(upload.key.as_str()).to_string(),
        )
        .await
        .map_err(ApiError::ArtifactStoreUnavailable)?;

    let new = NewArtifact {
        id,
        tenant_id,
        key: upload.key.as_str().to_owned(),
        object_path: object_path.clone(),
        size_bytes,
        content_type: upload.content_type,
        sha256,
        workspace_id: workspace.as_ref().map(|w| w.id),
        account_id: workspace.as_ref().map(|w| w.account_id),
    };
    let recorded = match tollgate_storage::pool::get(&state.pool).await {
        Ok(mut conn) => rows::record_put(&mut conn, new).await,
        Err(err) => Err(err),
    };
    match recorded {
        Ok(outcome) => {
            if let Some(replaced) = outcome.replaced {
                store.remove_object(&replaced.object_path).await;
            }
            Ok(outcome.artifact)
        }
        Err(err) => {
            store.remove_object(&object_path).await;
            Err(err.into())
        }
    }
}

/// Deletes the live version of `key`: commits the row change and its −size ledger entry first,
/// then removes the object. A failed object removal is logged and not an error to the client:
/// the artifact is gone and no longer metered; only its bytes are left orphaned in the store.
/// Errors: no live version (404 `ARTIFACT_NOT_FOUND`), database unavailable (503).
pub async fn delete_artifact(
    state: &AppState,
    tenant: TenantId,
    key: &ArtifactKey,
) -> Result<(), ApiError> {
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = rows::record_delete(&mut conn, tenant.as_uuid(), key.as_str())
        .await?
        .ok_or(ApiError::ArtifactNotFound)?;
    drop(conn);
    state.artifacts.remove_object(&row.object_path).await;
    Ok(())
}

/// `PUT /v1/artifacts/{key}` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// External id of the tenant's workspace the artifact belongs to.
    pub workspace: Option<String>,
}

/// Reads the body, refusing more than `limit` bytes (413 `ARTIFACT_TOO_LARGE`).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::ArtifactTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Invalid(format!("unreadable body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::ArtifactTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn content_type(req: &HttpRequest) -> Result<String, ApiError> {
    match req.headers().get(header::CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.len() <= MAX_CONTENT_TYPE_BYTES)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::Invalid("Content-Type must be 1-255 visible ASCII characters".into())
            }),
    }
}

async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let key = ArtifactKey::parse(&path)?;
    let query = web::Query::<PutQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(e.to_string()))?
        .into_inner();
    let content_type = content_type(&req)?;
    let body = read_body(&req, payload, state.artifacts.max_bytes).await?;
    let row = put_artifact(
        &state,
        Upload {
            tenant,
            key,
            content_type,
            workspace: query.workspace,
            body,
        },
    )
    .await?;
    let link = state.artifacts.download_link(&row).await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(ArtifactResponse::from_row(row, Some(link))))
}

async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let key = ArtifactKey::parse(&path)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = rows::find_live(&mut conn, tenant.as_uuid(), key.as_str())
        .await?
        .ok_or(ApiError::ArtifactNotFound)?;
    drop(conn);
    let link = state.artifacts.download_link(&row).await?;
    Ok(HttpResponse::Ok().json(ArtifactResponse::from_row(row, Some(link))))
}

/// See [`delete_artifact`]: 204 once the deletion is committed, whatever became of the object.
async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let key = ArtifactKey::parse(&path)?;
    delete_artifact(&state, tenant, &key).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/artifacts` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1..=100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (the last key it held).
    pub cursor: Option<String>,
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tenant = tenant(&req, &state)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(e.to_string()))?
        .into_inner();
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 100".into()));
    }
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let rows = rows::list_live(&mut conn, tenant.as_uuid(), query.cursor.as_deref(), limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.key.clone()))
        .flatten();
    let data = rows
        .into_iter()
        .map(|r| ArtifactResponse::from_row(r, None))
        .collect();
    Ok(HttpResponse::Ok().json(ArtifactListResponse { data, next_cursor }))
}

/// `GET /v1/downloads/{id}` query: the signed link's parameters.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    /// Unix seconds after which the link is refused.
    pub expires: i64,
    /// Lowercase hex HMAC-SHA256 (see [`sign_download`]).
    pub signature: String,
}

/// Serves a local download link. No tenant and no API key: the signature is the credential
/// (which is why the gateway forwards `/v1/downloads/…` unauthenticated). A bad signature is
/// 403, an expired link 410, a deleted artifact 404.
async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<DownloadQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::DownloadLinkInvalid)?
        .into_inner();
    let store = &state.artifacts;
    store
        .objects
        .verify(&path, query.expires, &query.signature, Utc::now())?;
    // The signature covers the id text, so a validly signed id always parses.
    let id: ArtifactId = path.parse().map_err(|_| ApiError::DownloadLinkInvalid)?;
    let mut conn = tollgate_storage::pool::get(&state.pool).await?;
    let row = rows::find_by_id(&mut conn, id.as_uuid())
        .await?
        .filter(|row| row.deleted_at.is_none())
        .ok_or(ApiError::ArtifactNotFound)?;
    drop(conn);
    let object = match store.objects.get(&row.object_path).await {
        Ok(object) => object,
        // Deleted between the row read and now.
        Err(object_store::Error::NotFound { .. }) => return Err(ApiError::ArtifactNotFound),
        Err(err) => return Err(ApiError::ArtifactStoreUnavailable(err)),
    };
    let size = object.meta.size;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, row.content_type.as_str()))
        .insert_header(content_disposition(&row.key))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .no_chunking(size)
        .streaming(object.into_stream()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_rules() {
        let long = "k".repeat(MAX_KEY_CHARS);
        let too_long = "k".repeat(MAX_KEY_CHARS + 1);
        let cases: &[(&str, bool)] = &[
            ("report.pdf", true),
            ("jobs/job_1/output.json", true),
            ("a..b/c", true),
            ("ünïcödé/名前.txt", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("/abs", false),
            ("../up", false),
            ("a/../b", false),
            ("a/..", false),
            ("tab\there", false),
            ("nul\0", false),
            ("del\u{7f}", false),
        ];
        for (key, ok) in cases {
            assert_eq!(ArtifactKey::parse(key).is_ok(), *ok, "key {key:?}");
        }
        let key = ArtifactKey::parse("a/b/c.txt").expect("valid");
        assert_eq!(key.file_name(), "c.txt");
        assert_eq!(file_name("dir/"), "artifact");
    }

    #[test]
    fn ids_round_trip() {
        let id = ArtifactId::from_uuid(Uuid::now_v7());
        let text = id.to_string();
        assert!(text.starts_with("art_"));
        assert_eq!(text.parse::<ArtifactId>().ok(), Some(id));
        assert!("art_xyz".parse::<ArtifactId>().is_err());
        assert!(text.replace("art_", "job_").parse::<ArtifactId>().is_err());
    }

    #[test]
    fn download_signatures_verify_only_unaltered_and_unexpired() {
        use tollgate_objects::verify_download;

        let key = b"test-key";
        let id = "art_0190a5c4e3c97d5a8b1f2e3d4c5b6a79";
        // Links already handed out must keep verifying: lowercase hex of
        // HMAC-SHA256(key, "<artifact id>.<expires>").
        assert_eq!(
            sign_download(key, id, 1_700_000_000),
            "92cb61d9abee584ff553e7b917ff561d045c300f7cc36b594e45cde25e4a8420"
        );

        let now = Utc::now();
        let expires = now.timestamp() + 60;
        let sig = sign_download(key, id, expires);
        assert!(verify_download(key, id, expires, &sig, now).is_ok());

        let mut tampered = sig.clone().into_bytes();
        tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        let cases: &[(&[u8], &str, i64, &str, &str)] = &[
            (key, id, expires, &tampered, "DOWNLOAD_LINK_INVALID"),
            (key, id, expires + 1, &sig, "DOWNLOAD_LINK_INVALID"),
            (
                key,
                "art_0190a5c4e3c97d5a8b1f2e3d4c5b6a7a",
                expires,
                &sig,
                "DOWNLOAD_LINK_INVALID",
            ),
            (b"other-key", id, expires, &sig, "DOWNLOAD_LINK_INVALID"),
            (key, id, expires, "not hex", "DOWNLOAD_LINK_INVALID"),
            (key, id, expires, "", "DOWNLOAD_LINK_INVALID"),
        ];
        for (k, i, e, s, code) in cases {
            let err = verify_download(k, i, *e, s, now).expect_err("must be refused");
            assert_eq!(ApiError::from(err).code(), *code);
        }

        let past = now.timestamp() - 1;
        let sig = sign_download(key, id, past);
        let err = verify_download(key, id, past, &sig, now).expect_err("expired");
        assert_eq!(ApiError::from(err).code(), "DOWNLOAD_LINK_EXPIRED");
    }

    #[tokio::test]
    async fn s3_links_are_signed_by_the_store() {
        // Static credentials: the SigV4 query signature is computed locally, nothing is sent.
        // No other test of this binary reads `AWS_*`.
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-a-secret");
        std::env::set_var("AWS_REGION", "eu-west-1");
        let config = ArtifactsConfig {
            store: crate::config::ArtifactStoreKind::S3,
            root: String::new(),
            bucket: "tollgate-test".into(),
            signing_key: crate::config::SecretString::default(),
            url_ttl_secs: 300,
            public_base_url: String::new(),
        };
        let store = ArtifactStore::from_config(&config, 1024).expect("s3 store");
        let tenant = Uuid::now_v7();
        let id = Uuid::now_v7();
        let row = ArtifactRow {
            id,
            tenant_id: tenant,
            key: "out/report.pdf".into(),
            object_path: format!("{tenant}/{id}"),
            size_bytes: 3,
            content_type: "application/pdf".into(),
            sha256: vec![0; 32],
            workspace_id: None,
            account_id: None,
            created_at: Utc::now(),
            deleted_at: None,
        };
        let link = store.download_link(&row).await.expect("signed");
        let url = url::Url::parse(&link.url).expect("url");
        assert_eq!(url.scheme(), "https");
        assert!(link.url.contains("tollgate-test"), "{}", link.url);
        assert!(url.path().ends_with(&format!("{tenant}/{id}")), "{url}");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(query
            .iter()
            .any(|(k, v)| k == "X-Amz-Expires" && v == "300"));
        assert!(query.iter().any(|(k, _)| k == "X-Amz-Signature"));
        assert!(link.expires_at > Utc::now());
    }

    #[test]
    fn content_disposition_names_the_last_segment() {
        assert_eq!(
            content_disposition("out/report \"v2\".pdf").to_string(),
            r#"attachment; filename="report \"v2\".pdf""#
        );
        let unicode = content_disposition("名前.txt").to_string();
        assert!(unicode.starts_with(r#"attachment; filename="__.txt"; filename*=UTF-8''"#));
    }
}
