//! The one envelope every domain event and command travels in (SPEC "Messaging"): id, type,
//! source, time, tenant, schema version and data. On AMQP the envelope id is also the
//! `message_id` property, so a consumer can dedupe on it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{JobId, TenantId};

/// A message on a Tollgate queue. `T` is the queue's versioned, tagged message enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Unique per message; also the AMQP `message_id`.
    pub id: Uuid,
    /// Dotted event type, e.g. `job.execute`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The service that produced it, e.g. `job-intake`.
    pub source: String,
    /// When it was produced (UTC).
    pub time: DateTime<Utc>,
    /// The tenant it concerns.
    pub tenant: TenantId,
    /// Version of `data`'s schema; bumped on incompatible changes.
    pub schema_version: u16,
    /// The payload.
    pub data: T,
}

/// Messages on the jobs queue. Tagged by `kind`, which includes the schema version, so a
/// worker can tell a message it understands from one it must dead-letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum JobCommand {
    /// Execute attempt `attempt` (1-based) of a job.
    #[serde(rename = "job.execute.v1")]
    ExecuteV1 { job_id: JobId, attempt: u32 },
}

impl JobCommand {
    /// The envelope type string for this command.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::ExecuteV1 { .. } => "job.execute",
        }
    }
}

impl Envelope<JobCommand> {
    /// Wraps a job command for `tenant`, produced by `source`.
    pub fn job_command(source: &str, tenant: TenantId, command: JobCommand) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: command.event_type().to_owned(),
            source: source.to_owned(),
            time: Utc::now(),
            tenant,
            schema_version: 1,
            data: command,
        }
    }
}

/// What the worker announces about a job on the events exchange (routing key = type), for
/// tenants' webhook endpoints (issue 5). Only terminal outcomes: `job.succeeded`,
/// `job.failed` (a permanent failure: 4xx or invalid input) and `job.dead` (retries
/// exhausted). `cost` is in the tenant's integer cost units (type weight × units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum JobEvent {
    #[serde(rename = "job.succeeded.v1")]
    SucceededV1 {
        job_id: JobId,
        job_type: String,
        attempts: i32,
        units: i64,
        cost: i64,
        finished_at: DateTime<Utc>,
    },
    #[serde(rename = "job.failed.v1")]
    FailedV1 {
        job_id: JobId,
        job_type: String,
        attempts: i32,
        error: String,
        http_status: Option<i32>,
        finished_at: DateTime<Utc>,
    },
    #[serde(rename = "job.dead.v1")]
    DeadV1 {
        job_id: JobId,
        job_type: String,
        attempts: i32,
        error: String,
        http_status: Option<i32>,
        finished_at: DateTime<Utc>,
    },
}

impl JobEvent {
    /// The envelope type and routing key: `job.succeeded`, `job.failed` or `job.dead`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::SucceededV1 { .. } => "job.succeeded",
            Self::FailedV1 { .. } => "job.failed",
            Self::DeadV1 { .. } => "job.dead",
        }
    }
}

impl Envelope<JobEvent> {
    /// Wraps a job event for `tenant`. The worker writes it to the outbox only in the
    /// transaction that moves the job to its terminal state, which happens once per job; a
    /// republished outbox row keeps its id, so consumers deduplicate on it.
    pub fn job_event(source: &str, tenant: TenantId, event: JobEvent) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            source: source.to_owned(),
            time: Utc::now(),
            tenant,
            schema_version: 1,
            data: event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_events_are_typed_and_tagged_with_their_version() {
        let job_id = JobId::new();
        let tenant = TenantId::new();
        let done = Envelope::job_event(
            "worker",
            tenant,
            JobEvent::SucceededV1 {
                job_id,
                job_type: "wordcount".into(),
                attempts: 1,
                units: 3,
                cost: 6,
                finished_at: Utc::now(),
            },
        );
        assert_eq!(done.event_type, "job.succeeded");
        let json = serde_json::to_value(&done).expect("serialize");
        assert_eq!(json["data"]["kind"], "job.succeeded.v1");
        assert_eq!(json["data"]["cost"], 6);
        let back: Envelope<JobEvent> = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, done);
        let dead = JobEvent::DeadV1 {
            job_id,
            job_type: "wordcount".into(),
            attempts: 3,
            error: "executor answered 503".into(),
            http_status: Some(503),
            finished_at: Utc::now(),
        };
        assert_eq!(dead.event_type(), "job.dead");
    }

    #[test]
    fn job_command_json_is_tagged_with_its_version() {
        let job_id = JobId::new();
        let env = Envelope::job_command(
            "job-intake",
            TenantId::new(),
            JobCommand::ExecuteV1 { job_id, attempt: 2 },
        );
        let json = serde_json::to_value(&env).expect("serialize");
        assert_eq!(json["type"], "job.execute");
        assert_eq!(json["data"]["kind"], "job.execute.v1");
        assert_eq!(json["data"]["attempt"], 2);
        let back: Envelope<JobCommand> = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, env);
    }
}
