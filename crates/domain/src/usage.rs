//! Usage metering vocabulary (SPEC "Usage metering and the ledger"): billable metrics, their
//! aggregations and per-operation weights, and the validation of one usage event.
//!
//! Everything here is pure: the intake service parses and measures each event with
//! [`UsageEvent::parse`] and [`MetricDefinition::measure`], then writes the ledger entry.
//! Units are integers in the metric's own unit (bytes, milliseconds, tokens, calls): choose
//! a unit fine enough that usage is whole.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How a metric's ledger entries combine into one quantity per period (after Lago's and
/// Orb's billable metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Number of events (each event is 1 raw unit; weights multiply it).
    Count,
    /// Sum of the `field` property.
    Sum,
    /// Largest `field` value in the period.
    Max,
    /// Number of distinct values of `field` in the period.
    UniqueCount,
    /// The `field` value of the period's latest event (by event timestamp).
    Latest,
    /// Time-weighted level: each event's `field` is a delta (+bytes, −bytes); the result is
    /// the running level averaged over the period, Σ(level × seconds held) / period seconds,
    /// with the level carried in from before the period (Lago's `weighted_sum`).
    WeightedSum,
}

impl Aggregation {
    /// Every aggregation, in documentation order.
    pub const ALL: [Aggregation; 6] = [
        Self::Count,
        Self::Sum,
        Self::Max,
        Self::UniqueCount,
        Self::Latest,
        Self::WeightedSum,
    ];

    /// The stored name (`billable_metrics.aggregation`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Max => "max",
            Self::UniqueCount => "unique_count",
            Self::Latest => "latest",
            Self::WeightedSum => "weighted_sum",
        }
    }

    /// Whether the aggregation reads a property of the event (all but `count`).
    pub fn needs_field(self) -> bool {
        self != Self::Count
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Aggregation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown aggregation `{s}` (count, sum, max, unique_count, latest, weighted_sum)"))
    }
}

/// Metric codes Tollgate writes itself; tenants cannot define metrics under these prefixes.
pub const RESERVED_PREFIXES: [&str; 3] = ["job.", "gateway.", "storage."];

/// A billable metric as configured in the tenant's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricDefinition {
    /// `^[a-z][a-z0-9_.:-]{0,63}$`, unique per tenant.
    pub code: String,
    pub aggregation: Aggregation,
    /// The property read by every aggregation but `count`.
    #[serde(default)]
    pub field: Option<String>,
    /// The property naming the operation (e.g. `operation`), when weights apply.
    #[serde(default)]
    pub weight_property: Option<String>,
    /// Integer weight per operation, e.g. `task_create = 1`, `ai_completion = 10`.
    #[serde(default)]
    pub weights: BTreeMap<String, i64>,
    /// Weight of an operation not in `weights`; `None` refuses such events.
    #[serde(default = "one")]
    pub default_weight: Option<i64>,
}

fn one() -> Option<i64> {
    Some(1)
}

/// What one event contributes to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    /// Units in the metric's unit, before weights.
    pub raw_units: i64,
    /// `raw_units × weight`.
    pub weighted_units: i64,
    /// The distinct key, for `unique_count`.
    pub dimension: Option<String>,
    /// The operation whose weight applied, if the metric is weighted.
    pub operation: Option<String>,
    pub weight: i64,
}

/// Why one event was refused: a stable code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRejection {
    pub code: String,
    pub message: String,
}

impl EventRejection {
    /// A rejection with `code` (SCREAMING_SNAKE_CASE, stable) and a message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for EventRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl MetricDefinition {
    /// Checks the definition itself (the catalog refuses a bad one). Errors: a message
    /// naming the problem.
    pub fn validate(&self) -> Result<(), String> {
        let code_ok = self.code.len() <= 64
            && self.code.starts_with(|c: char| c.is_ascii_lowercase())
            && self.code.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
            });
        if !code_ok {
            return Err(format!(
                "metric code `{}` must match ^[a-z][a-z0-9_.:-]{{0,63}}$",
                self.code
            ));
        }
        if RESERVED_PREFIXES.iter().any(|p| self.code.starts_with(p)) {
            return Err(format!(
                "metric code `{}` uses a reserved prefix ({})",
                self.code,
                RESERVED_PREFIXES.join(", ")
            ));
        }
        match (self.aggregation.needs_field(), &self.field) {
            (true, None) => {
                return Err(format!(
                    "metric `{}`: aggregation {} needs `field`",
                    self.code, self.aggregation
                ))
            }
            (false, Some(_)) => {
                return Err(format!(
                    "metric `{}`: aggregation count reads no `field`",
                    self.code
                ))
            }
            _ => {}
        }
        if self.weight_property.is_none() && !self.weights.is_empty() {
            return Err(format!(
                "metric `{}`: `weights` need a `weight_property`",
                self.code
            ));
        }
        if let Some((op, w)) = self.weights.iter().find(|(_, w)| **w < 0) {
            return Err(format!(
                "metric `{}`: weight of `{op}` is {w}; weights are >= 0",
                self.code
            ));
        }
        if self.default_weight.is_some_and(|w| w < 0) {
            return Err(format!(
                "metric `{}`: default_weight must be >= 0",
                self.code
            ));
        }
        Ok(())
    }

    /// What an event with `properties` contributes. Errors: `MISSING_PROPERTY`,
    /// `INVALID_VALUE` (not an integer, or overflow), `UNKNOWN_OPERATION`.
    pub fn measure(
        &self,
        properties: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Measure, EventRejection> {
        let (raw_units, dimension) = match (self.aggregation, &self.field) {
            (Aggregation::Count, _) | (_, None) => (1, None),
            (Aggregation::UniqueCount, Some(field)) => {
                let value = properties.get(field).ok_or_else(|| missing(field))?;
                let key = match value {
                    serde_json::Value::String(s) if !s.is_empty() && s.len() <= 200 => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(EventRejection::new(
                            "INVALID_VALUE",
                            format!("property `{field}` must be a non-empty string (at most 200 bytes) or a number"),
                        ))
                    }
                };
                (1, Some(key))
            }
            (_, Some(field)) => {
                let value = properties.get(field).ok_or_else(|| missing(field))?;
                (integer(field, value)?, None)
            }
        };
        let (operation, weight) = match &self.weight_property {
            None => (None, 1),
            Some(prop) => {
                let op = properties
                    .get(prop)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        EventRejection::new(
                            "MISSING_PROPERTY",
                            format!(
                                "metric `{}` is weighted by property `{prop}` (a string)",
                                self.code
                            ),
                        )
                    })?;
                let weight = self
                    .weights
                    .get(op)
                    .copied()
                    .or(self.default_weight)
                    .ok_or_else(|| {
                        EventRejection::new(
                            "UNKNOWN_OPERATION",
                            format!("operation `{op}` has no weight in metric `{}`", self.code),
                        )
                    })?;
                (Some(op.to_owned()), weight)
            }
        };
        let weighted_units = raw_units.checked_mul(weight).ok_or_else(|| {
            EventRejection::new("INVALID_VALUE", "value × weight overflows 64 bits")
        })?;
        Ok(Measure {
            raw_units,
            weighted_units,
            dimension,
            operation,
            weight,
        })
    }
}

fn missing(field: &str) -> EventRejection {
    EventRejection::new(
        "MISSING_PROPERTY",
        format!("property `{field}` is required by the metric"),
    )
}

/// An integer from a JSON number or a string of digits.
fn integer(field: &str, value: &serde_json::Value) -> Result<i64, EventRejection> {
    let parsed = match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        EventRejection::new(
            "INVALID_VALUE",
            format!("property `{field}` must be an integer in the metric's unit"),
        )
    })
}

/// The aggregation of a metric Tollgate writes itself (`job.<type>`: executor units × type
/// weight; `gateway.requests|bytes_in|bytes_out`; `storage.bytes` as ±bytes deltas).
pub fn builtin_aggregation(code: &str) -> Option<Aggregation> {
    match code {
        "gateway.requests" | "gateway.bytes_in" | "gateway.bytes_out" => Some(Aggregation::Sum),
        "storage.bytes" => Some(Aggregation::WeightedSum),
        c if c.starts_with("job.") => Some(Aggregation::Sum),
        _ => None,
    }
}

/// Bounds on one usage event.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// How far past the receiving clock an event timestamp may be.
    pub max_future: Duration,
    /// Largest serialized `properties`, bytes.
    pub max_properties_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_future: Duration::minutes(5),
            max_properties_bytes: 8 * 1024,
        }
    }
}

/// The subject an event is billed to: a workspace (attributed to its owner at the event's
/// time) or an account directly (by external id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Workspace(String),
    Account(String),
    /// Tenant-level usage, attributed to no billing entity.
    None,
}

/// A usage event after parsing (`POST /v1/events`).
#[derive(Debug, Clone)]
pub struct UsageEvent {
    /// Chosen by the client; dedupe key per tenant, forever.
    pub id: String,
    pub metric: String,
    pub subject: Subject,
    pub timestamp: DateTime<Utc>,
    pub properties: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    id: String,
    metric: String,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
}

impl UsageEvent {
    /// Parses one event `{id, metric, workspace?, account?, timestamp? (RFC 3339, default
    /// now), properties? (object)}`. Errors: `INVALID_EVENT` (shape), `INVALID_EVENT_ID`,
    /// `INVALID_TIMESTAMP`, `TIMESTAMP_IN_FUTURE` (beyond `limits.max_future`),
    /// `PROPERTIES_TOO_LARGE`.
    pub fn parse(
        value: &serde_json::Value,
        now: DateTime<Utc>,
        limits: &EventLimits,
    ) -> Result<Self, EventRejection> {
        let wire: WireEvent = serde_json::from_value(value.clone())
            .map_err(|e| EventRejection::new("INVALID_EVENT", e.to_string()))?;
        if wire.id.is_empty() || wire.id.len() > 200 || wire.id.chars().any(char::is_control) {
            return Err(EventRejection::new(
                "INVALID_EVENT_ID",
                "id must be 1-200 bytes without control characters",
            ));
        }
        let subject = match (wire.workspace, wire.account) {
            (Some(_), Some(_)) => {
                return Err(EventRejection::new(
                    "INVALID_EVENT",
                    "give `workspace` or `account`, not both",
                ))
            }
            (Some(w), None) => Subject::Workspace(w),
            (None, Some(a)) => Subject::Account(a),
            (None, None) => Subject::None,
        };
        let timestamp = match wire.timestamp {
            None => now,
            Some(t) => DateTime::parse_from_rfc3339(&t)
                .map_err(|e| {
                    EventRejection::new(
                        "INVALID_TIMESTAMP",
                        format!("timestamp `{t}` is not RFC 3339: {e}"),
                    )
                })?
                .with_timezone(&Utc),
        };
        if timestamp > now + limits.max_future {
            return Err(EventRejection::new(
                "TIMESTAMP_IN_FUTURE",
                format!(
                    "timestamp {timestamp} is more than {} s ahead of the server clock",
                    limits.max_future.num_seconds()
                ),
            ));
        }
        let properties = wire.properties.unwrap_or_default();
        let size = serde_json::to_vec(&properties)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limits.max_properties_bytes {
            return Err(EventRejection::new(
                "PROPERTIES_TOO_LARGE",
                format!(
                    "properties are {size} bytes; at most {} are accepted",
                    limits.max_properties_bytes
                ),
            ));
        }
        Ok(Self {
            id: wire.id,
            metric: wire.metric,
            subject,
            timestamp,
            properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn ops_metric() -> MetricDefinition {
        MetricDefinition {
            code: "operations".into(),
            aggregation: Aggregation::Count,
            field: None,
            weight_property: Some("operation".into()),
            weights: [
                ("task_create".to_owned(), 1),
                ("ai_completion".to_owned(), 10),
            ]
            .into_iter()
            .collect(),
            default_weight: None,
        }
    }

    #[test]
    fn weights_apply_per_operation() {
        let m = ops_metric();
        let ai = m
            .measure(&props(json!({"operation": "ai_completion"})))
            .unwrap();
        assert_eq!((ai.raw_units, ai.weighted_units), (1, 10));
        let err = m.measure(&props(json!({"operation": "nope"}))).unwrap_err();
        assert_eq!(err.code, "UNKNOWN_OPERATION");
        let err = m.measure(&props(json!({}))).unwrap_err();
        assert_eq!(err.code, "MISSING_PROPERTY");
    }

    #[test]
    fn sum_reads_integer_values_only() {
        let m = MetricDefinition {
            code: "tokens".into(),
            aggregation: Aggregation::Sum,
            field: Some("tokens".into()),
            weight_property: None,
            weights: BTreeMap::new(),
            default_weight: Some(1),
        };
        assert_eq!(
            m.measure(&props(json!({"tokens": 42}))).unwrap().raw_units,
            42
        );
        assert_eq!(
            m.measure(&props(json!({"tokens": "-7"})))
                .unwrap()
                .raw_units,
            -7
        );
        assert_eq!(
            m.measure(&props(json!({"tokens": 1.5}))).unwrap_err().code,
            "INVALID_VALUE"
        );
    }

    #[test]
    fn unique_count_keeps_the_key() {
        let m = MetricDefinition {
            code: "active_users".into(),
            aggregation: Aggregation::UniqueCount,
            field: Some("user".into()),
            weight_property: None,
            weights: BTreeMap::new(),
            default_weight: Some(1),
        };
        let got = m.measure(&props(json!({"user": "u1"}))).unwrap();
        assert_eq!(got.dimension.as_deref(), Some("u1"));
    }

    #[test]
    fn definitions_are_checked() {
        let mut m = ops_metric();
        assert!(m.validate().is_ok());
        m.code = "job.x".into();
        assert!(m.validate().is_err());
        m.code = "Bad".into();
        assert!(m.validate().is_err());
        let mut m = ops_metric();
        m.aggregation = Aggregation::Sum;
        assert!(m.validate().is_err(), "sum without field");
    }

    #[test]
    fn events_are_bounded_in_time() {
        let now = Utc::now();
        let limits = EventLimits::default();
        let ahead = (now + Duration::minutes(10)).to_rfc3339();
        let err = UsageEvent::parse(
            &json!({"id": "e", "metric": "m", "timestamp": ahead}),
            now,
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.code, "TIMESTAMP_IN_FUTURE");
        let err = UsageEvent::parse(&json!({"id": "", "metric": "m"}), now, &limits).unwrap_err();
        assert_eq!(err.code, "INVALID_EVENT_ID");
        let err = UsageEvent::parse(&json!({"id": "e", "metric": "m", "extra": 1}), now, &limits)
            .unwrap_err();
        assert_eq!(err.code, "INVALID_EVENT");
        let ok = UsageEvent::parse(
            &json!({"id": "e", "metric": "m", "workspace": "w"}),
            now,
            &limits,
        )
        .unwrap();
        assert_eq!(ok.subject, Subject::Workspace("w".into()));
        assert_eq!(ok.timestamp, now);
    }
}
