//! Prefixed identifiers (`job_…`, `ten_…`, `key_…`), after Stripe and Svix: a UUID (v7, so ids
//! sort by creation time) rendered as a prefix plus 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// An identifier string that does not have the expected prefix or UUID part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id `{value}`: expected `{prefix}` followed by 32 hex digits")]
pub struct IdError {
    kind: &'static str,
    prefix: &'static str,
    value: String,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// The textual prefix of this id kind, including the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new time-ordered id (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps a UUID read from storage.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID as stored in PostgreSQL.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdError { kind: $kind, prefix: $prefix, value: s.chars().take(80).collect() };
                let hex = s.strip_prefix($prefix).ok_or_else(err)?;
                if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err());
                }
                Uuid::parse_str(hex).map(Self).map_err(|_| err())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A tenant: one customer of the platform operator, owner of keys, job types and jobs.
    TenantId, "ten_", "tenant"
);
prefixed_id!(
    /// A job submitted through `POST /v1/jobs`.
    JobId, "job_", "job"
);
prefixed_id!(
    /// An API key record (the key's secret is never stored, only its SHA-256).
    ApiKeyId, "key_", "api key"
);
prefixed_id!(
    /// A billing entity: a tenant's customer account, personal or organization.
    AccountId, "acc_", "account"
);
prefixed_id!(
    /// A workspace, owned by one account at a time (ownership history in `workspace_owners`).
    WorkspaceId, "ws_", "workspace"
);
prefixed_id!(
    /// One stored version of an artifact; used by the API and in the ledger's `source_id` and
    /// idempotency keys of storage entries.
    ArtifactId, "art_", "artifact"
);
prefixed_id!(
    /// A subscription of one billing entity to a plan version.
    SubscriptionId, "sub_", "subscription"
);
prefixed_id!(
    /// An invoice (draft or final) of one billing entity.
    InvoiceId, "inv_", "invoice"
);
prefixed_id!(
    /// One immutable version of a plan in a tenant's catalog.
    PlanVersionId, "planv_", "plan version"
);
prefixed_id!(
    /// A credit note against a finalized invoice.
    CreditNoteId, "cn_", "credit note"
);
prefixed_id!(
    /// A tenant's webhook endpoint.
    EndpointId, "ep_", "endpoint"
);
prefixed_id!(
    /// A webhook message (one tenant event; the envelope id). Its text is the Standard
    /// Webhooks `webhook-id` header, the same on every attempt and redelivery, so receivers
    /// can dedupe on it.
    MessageId, "msg_", "message"
);
prefixed_id!(
    /// One webhook message to one endpoint.
    DeliveryId, "dlv_", "delivery"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_json() {
        let id = JobId::new();
        let text = id.to_string();
        assert!(text.starts_with("job_"));
        assert_eq!(text.len(), 4 + 32);
        assert_eq!(text.parse::<JobId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(
            serde_json::from_str::<JobId>(&json).expect("deserialize"),
            id
        );
    }

    #[test]
    fn rejects_wrong_prefix_and_garbage() {
        let id = JobId::new().to_string();
        assert!(id.replace("job_", "ten_").parse::<JobId>().is_err());
        assert!("job_xyz".parse::<JobId>().is_err());
        assert!("job_0123456789abcdef0123456789abcdeg"
            .parse::<JobId>()
            .is_err());
        assert!("".parse::<TenantId>().is_err());
    }

    #[test]
    fn webhook_ids_round_trip_and_refuse_other_prefixes() {
        let id = EndpointId::new();
        assert_eq!(id.to_string().parse::<EndpointId>(), Ok(id));
        assert!(id.to_string().starts_with("ep_"));
        assert!(id
            .to_string()
            .replace("ep_", "dlv_")
            .parse::<EndpointId>()
            .is_err());
        assert!("dlv_xyz".parse::<DeliveryId>().is_err());
        let uuid = Uuid::now_v7();
        assert_eq!(
            MessageId::from_uuid(uuid).to_string(),
            format!("msg_{}", uuid.simple())
        );
    }
}
