//! The webhook service's prefixed identifiers, after Svix: endpoints `ep_…`, messages
//! `msg_…` (the Standard Webhooks `webhook-id`), deliveries `dlv_…`; a UUID rendered as the
//! prefix plus 32 lowercase hex digits, like `tollgate_domain::ids`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// An identifier string without the expected prefix or UUID part.
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
            /// The textual prefix, including the underscore.
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
                let err = || IdError {
                    kind: $kind,
                    prefix: $prefix,
                    value: s.chars().take(80).collect(),
                };
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
    /// A tenant's webhook endpoint.
    EndpointId, "ep_", "endpoint"
);
prefixed_id!(
    /// A message (one tenant event; the envelope id). Its text is the `webhook-id` header,
    /// the same on every attempt and redelivery, so receivers can dedupe on it.
    MessageId, "msg_", "message"
);
prefixed_id!(
    /// One message to one endpoint.
    DeliveryId, "dlv_", "delivery"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_prefixes() {
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
