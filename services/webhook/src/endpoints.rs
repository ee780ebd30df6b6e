//! Tenants' webhook endpoints (issue 5, Build 5): what they are, the rules for creating and
//! changing them, and the views the API and `tollgatectl` show. Handlers parse their input
//! into [`EndpointUrl`] and [`EventTypes`] and call the functions here.

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use tollgate_storage::webhooks::{self as store, EndpointRow, EndpointUpdate, ALL_EVENT_TYPES};
use uuid::Uuid;

use crate::error::{or_not_found, WebhookError};
use crate::events::EVENT_TYPES;
use crate::signing::generate_secret;
use tollgate_domain::EndpointId;

/// Most endpoints one tenant may register.
pub const MAX_ENDPOINTS_PER_TENANT: i64 = 50;
/// Longest endpoint URL, bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest description, characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// An absolute `http`/`https` URL without credentials, at most 2048 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// Parses a URL. Errors: [`WebhookError::Invalid`] naming the problem.
    pub fn parse(raw: &str) -> Result<Self, WebhookError> {
        let invalid = |why: &str| WebhookError::Invalid(format!("url: {why}"));
        if raw.len() > MAX_URL_BYTES {
            return Err(invalid("longer than 2048 bytes"));
        }
        let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not carry credentials"));
        }
        Ok(Self(url.to_string()))
    }

    /// The URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event types an endpoint receives: 1 to 64 distinct entries, each a documented type
/// ([`EVENT_TYPES`]) or `*` (every type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(Vec<String>);

impl EventTypes {
    /// Parses a list. Errors: [`WebhookError::Invalid`] (empty, too long) or
    /// [`WebhookError::UnknownEventType`].
    pub fn parse(raw: &[String]) -> Result<Self, WebhookError> {
        if raw.is_empty() || raw.len() > 64 {
            return Err(WebhookError::Invalid(
                "event_types: between 1 and 64 entries (`*` for all)".into(),
            ));
        }
        let mut types: Vec<String> = Vec::with_capacity(raw.len());
        for t in raw {
            if t != ALL_EVENT_TYPES && !EVENT_TYPES.contains(&t.as_str()) {
                return Err(WebhookError::UnknownEventType(
                    t.chars().take(100).collect(),
                ));
            }
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
        Ok(Self(types))
    }

    /// The types, first-seen order, without repeats.
    pub fn into_inner(self) -> Vec<String> {
        self.0
    }
}

fn parse_description(raw: Option<String>) -> Result<Option<String>, WebhookError> {
    match raw {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(WebhookError::Invalid(
            "description: at most 500 characters".into(),
        )),
        Some(d) if d.contains('\0') => Err(WebhookError::Invalid(
            "description: must not contain NUL".into(),
        )),
        other => Ok(other),
    }
}

/// An endpoint as the API shows it. `secret` is present only in the answers to creation and
/// rotation.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub id: EndpointId,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// First failed attempt since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// While set and in the future, the previous secret signs too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&EndpointRow> for EndpointView {
    fn from(row: &EndpointRow) -> Self {
        Self {
            id: EndpointId::from_uuid(row.id),
            url: row.url.clone(),
            description: row.description.clone(),
            event_types: row.event_types.clone(),
            status: if row.disabled_at.is_some() {
                "disabled"
            } else {
                "enabled"
            },
            disabled_at: row.disabled_at,
            disabled_reason: row.disabled_reason.clone(),
            failing_since: row.failing_since,
            previous_secret_expires_at: row.previous_secret_expires_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            secret: None,
        }
    }
}

impl EndpointView {
    /// The view with the current secret shown.
    pub fn with_secret(row: &EndpointRow) -> Self {
        Self {
            secret: Some(row.secret.clone()),
            ..Self::from(row)
        }
    }
}

/// Registers an endpoint with a new secret. Errors: [`WebhookError::EndpointLimit`],
/// invalid description, storage.
pub async fn create(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    url: EndpointUrl,
    description: Option<String>,
    event_types: EventTypes,
) -> Result<EndpointRow, WebhookError> {
    let description = parse_description(description)?.unwrap_or_default();
    let existing = store::list_endpoints(conn, tenant).await?.len() as i64;
    if existing >= MAX_ENDPOINTS_PER_TENANT {
        return Err(WebhookError::EndpointLimit(MAX_ENDPOINTS_PER_TENANT));
    }
    let now = Utc::now();
    let row = EndpointRow {
        id: EndpointId::new().as_uuid(),
        tenant_id: tenant,
        url: url.0,
        description,
        event_types: event_types.0,
        secret: generate_secret(),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        disabled_reason: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    store::insert_endpoint(conn, &row).await?;
    Ok(row)
}

/// Changes an endpoint's URL, description or event types (`None` keeps each).
pub async fn edit(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    id: EndpointId,
    url: Option<EndpointUrl>,
    description: Option<String>,
    event_types: Option<EventTypes>,
) -> Result<EndpointRow, WebhookError> {
    let description = parse_description(description)?;
    store::update_endpoint(
        conn,
        tenant,
        id.as_uuid(),
        EndpointUpdate::Edit {
            url: url.map(|u| u.0),
            description,
            event_types: event_types.map(|t| t.0),
        },
        Utc::now(),
    )
    .await
    .map_err(|e| or_not_found(e, WebhookError::EndpointNotFound))
}

/// Rotates the secret: a new one signs from now on and the old one keeps signing for
/// `overlap_secs` (0: it stops at once), so receivers can switch without missing a delivery
/// (issue 5, Build 5). Errors: overlap out of `0..=max_overlap_secs`, not found.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    id: EndpointId,
    overlap_secs: i64,
    max_overlap_secs: i64,
) -> Result<EndpointRow, WebhookError> {
    if !(0..=max_overlap_secs).contains(&overlap_secs) {
        return Err(WebhookError::Invalid(format!(
            "overlap_secs: between 0 and {max_overlap_secs}"
        )));
    }
    let current = store::find_endpoint(conn, Some(tenant), id.as_uuid())
        .await
        .map_err(|e| or_not_found(e, WebhookError::EndpointNotFound))?;
    let now = Utc::now();
    let (previous, previous_expires_at) = if overlap_secs > 0 {
        (
            Some(current.secret),
            Some(now + chrono::Duration::seconds(overlap_secs)),
        )
    } else {
        (None, None)
    };
    store::update_endpoint(
        conn,
        tenant,
        id.as_uuid(),
        EndpointUpdate::RotateSecret {
            secret: generate_secret(),
            previous,
            previous_expires_at,
        },
        now,
    )
    .await
    .map_err(|e| or_not_found(e, WebhookError::EndpointNotFound))
}

/// Enables an endpoint again (and forgets that it was failing). Deliveries failed while it
/// was disabled stay failed; redeliver them by id.
pub async fn enable(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    id: EndpointId,
) -> Result<EndpointRow, WebhookError> {
    store::update_endpoint(
        conn,
        tenant,
        id.as_uuid(),
        EndpointUpdate::Enable,
        Utc::now(),
    )
    .await
    .map_err(|e| or_not_found(e, WebhookError::EndpointNotFound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_without_credentials() {
        assert!(EndpointUrl::parse("https://example.com/hook").is_ok());
        assert!(EndpointUrl::parse("http://127.0.0.1:9000/x?y=1").is_ok());
        for bad in [
            "ftp://example.com",
            "/relative",
            "https://user:pw@example.com/",
            "mailto:a@b.c",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert!(EndpointUrl::parse(&long).is_err());
    }

    #[test]
    fn event_types_are_documented_types_or_the_wildcard() {
        let parse =
            |v: &[&str]| EventTypes::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            parse(&["invoice.paid", "job.dead", "invoice.paid"])
                .expect("valid")
                .into_inner(),
            ["invoice.paid", "job.dead"]
        );
        assert!(parse(&["*"]).is_ok());
        assert!(matches!(
            parse(&["invoice.piad"]),
            Err(WebhookError::UnknownEventType(_))
        ));
        assert!(matches!(parse(&[]), Err(WebhookError::Invalid(_))));
    }
}
