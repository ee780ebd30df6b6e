//! Jobs and their attempts: insertion with the outbox row in one transaction, reads with
//! cursor pagination, and the worker's state transitions, each guarded so that a duplicate or
//! late message can never move a job out of a terminal state or bill it twice.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{
    JobAttemptRow, JobRow, NewJob, NewJobAttempt, NewLedgerEntry, NewOutboxMessage,
};
use crate::schema::{job_attempts, jobs, ledger_entries, outbox};
use crate::StorageError;

/// States from which a worker may still move a job.
const LIVE_STATES: [&str; 3] = ["queued", "processing", "retrying"];

/// What [`insert_job`] did.
#[derive(Debug)]
pub enum InsertOutcome {
    /// A new job, committed together with its outbox message.
    Created(JobRow),
    /// A job with this idempotency key already existed; nothing was written.
    Existing(JobRow),
}

/// Inserts a queued job and the message that will execute it, in one transaction (the
/// transactional outbox). When the tenant already has a job with the same idempotency key,
/// returns that job and writes nothing: the caller compares request hashes to tell a repeat
/// from a conflict.
pub async fn insert_job(
    conn: &mut AsyncPgConnection,
    job: NewJob,
    message: NewOutboxMessage,
) -> Result<InsertOutcome, StorageError> {
    conn.transaction(async |conn| {
        let inserted: Option<JobRow> = diesel::insert_into(jobs::table)
            .values(&job)
            .on_conflict((jobs::tenant_id, jobs::idempotency_key))
            .do_nothing()
            .returning(JobRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        match inserted {
            Some(row) => {
                diesel::insert_into(outbox::table)
                    .values(&message)
                    .execute(conn)
                    .await?;
                Ok(InsertOutcome::Created(row))
            }
            None => {
                let existing = jobs::table
                    .filter(jobs::tenant_id.eq(job.tenant_id))
                    .filter(jobs::idempotency_key.eq(&job.idempotency_key))
                    .select(JobRow::as_select())
                    .first(conn)
                    .await?;
                Ok(InsertOutcome::Existing(existing))
            }
        }
    })
    .await
}

/// One job of one tenant.
pub async fn find_job(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<JobRow>, StorageError> {
    Ok(jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .filter(jobs::id.eq(job_id))
        .select(JobRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A job by id alone: for the worker and the operator CLI, which act across tenants.
pub async fn find_job_any_tenant(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
) -> Result<Option<JobRow>, StorageError> {
    Ok(jobs::table
        .find(job_id)
        .select(JobRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Filters for [`list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<String>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs older than this id (the cursor: the last id of the previous page).
    pub before: Option<Uuid>,
}

/// A tenant's jobs, newest first, at most `limit` (1..=100 enforced by the caller).
pub async fn list_jobs(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    filter: &JobFilter,
    limit: i64,
) -> Result<Vec<JobRow>, StorageError> {
    let mut query = jobs::table
        .filter(jobs::tenant_id.eq(tenant_id))
        .select(JobRow::as_select())
        .order(jobs::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(status) = &filter.status {
        query = query.filter(jobs::status.eq(status.clone()));
    }
    if let Some(job_type) = &filter.job_type {
        query = query.filter(jobs::job_type.eq(job_type.clone()));
    }
    if let Some(before) = filter.before {
        query = query.filter(jobs::id.lt(before));
    }
    Ok(query.load(conn).await?)
}

/// Marks attempt `attempt` as started and returns the job, or `None` when the job is already
/// terminal (a duplicate or stale message) or does not exist.
pub async fn start_attempt(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    attempt: i32,
) -> Result<Option<JobRow>, StorageError> {
    Ok(diesel::update(jobs::table)
        .filter(jobs::id.eq(job_id))
        .filter(jobs::status.eq_any(LIVE_STATES))
        .set((
            jobs::status.eq("processing"),
            jobs::attempts.eq(attempt),
            jobs::updated_at.eq(Utc::now()),
        ))
        .returning(JobRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// A successful attempt's result.
#[derive(Debug, Clone)]
pub struct Success {
    pub job_id: Uuid,
    pub attempt: i32,
    pub output: serde_json::Value,
    /// Units the executor reported.
    pub units: i64,
    /// `units × weight`, integer cost units.
    pub cost: i64,
    pub duration_ms: i64,
    /// The ledger entry to append with the completion.
    pub ledger_entry: NewLedgerEntry,
}

/// Completes a job: the job's success, its cost, its attempt record and one ledger entry
/// commit in one transaction. Returns false, writing nothing, when the job was already
/// terminal: a redelivered or duplicated message never makes a second entry (and the ledger's
/// unique idempotency key is the second wall).
pub async fn complete_success(
    conn: &mut AsyncPgConnection,
    success: &Success,
) -> Result<bool, StorageError> {
    conn.transaction(async |conn| {
        let now = Utc::now();
        let updated = diesel::update(jobs::table)
            .filter(jobs::id.eq(success.job_id))
            .filter(jobs::status.eq_any(LIVE_STATES))
            .set((
                jobs::status.eq("succeeded"),
                jobs::attempts.eq(success.attempt),
                jobs::output.eq(&success.output),
                jobs::units.eq(success.units),
                jobs::cost.eq(success.cost),
                jobs::last_error.eq(None::<String>),
                jobs::updated_at.eq(now),
                jobs::finished_at.eq(now),
            ))
            .execute(conn)
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        diesel::insert_into(job_attempts::table)
            .values(NewJobAttempt {
                job_id: success.job_id,
                attempt: success.attempt,
                outcome: "succeeded".to_owned(),
                error: None,
                http_status: None,
                duration_ms: success.duration_ms,
            })
            .execute(conn)
            .await?;
        diesel::insert_into(ledger_entries::table)
            .values(&success.ledger_entry)
            .on_conflict((ledger_entries::tenant_id, ledger_entries::idempotency_key))
            .do_nothing()
            .execute(conn)
            .await?;
        Ok(true)
    })
    .await
}

/// Where a failed attempt leaves the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureNext {
    /// Retryable, attempts left: `retrying` (the caller publishes the delayed retry).
    Retry,
    /// Retryable but out of attempts: `dead`.
    Dead,
    /// Permanent (4xx, invalid input): `failed`.
    Failed,
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub job_id: Uuid,
    pub attempt: i32,
    pub next: FailureNext,
    pub error: String,
    pub http_status: Option<i32>,
    pub duration_ms: i64,
}

/// Records a failed attempt and moves the job to the state `failure.next` names. Returns
/// false, writing nothing, when the job was already terminal.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    failure: &Failure,
) -> Result<bool, StorageError> {
    conn.transaction(async |conn| {
        let now = Utc::now();
        let (status, finished_at) = match failure.next {
            FailureNext::Retry => ("retrying", None),
            FailureNext::Dead => ("dead", Some(now)),
            FailureNext::Failed => ("failed", Some(now)),
        };
        let updated = diesel::update(jobs::table)
            .filter(jobs::id.eq(failure.job_id))
            .filter(jobs::status.eq_any(LIVE_STATES))
            .set((
                jobs::status.eq(status),
                jobs::attempts.eq(failure.attempt),
                jobs::last_error.eq(&failure.error),
                jobs::updated_at.eq(now),
                jobs::finished_at.eq(finished_at),
            ))
            .execute(conn)
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        let outcome = match failure.next {
            FailureNext::Failed => "permanent",
            FailureNext::Retry | FailureNext::Dead => "retryable",
        };
        diesel::insert_into(job_attempts::table)
            .values(NewJobAttempt {
                job_id: failure.job_id,
                attempt: failure.attempt,
                outcome: outcome.to_owned(),
                error: Some(failure.error.clone()),
                http_status: failure.http_status,
                duration_ms: failure.duration_ms,
            })
            .execute(conn)
            .await?;
        Ok(true)
    })
    .await
}

/// A job's attempts, oldest first.
pub async fn list_attempts(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
) -> Result<Vec<JobAttemptRow>, StorageError> {
    Ok(job_attempts::table
        .filter(job_attempts::job_id.eq(job_id))
        .order(job_attempts::id.asc())
        .select(JobAttemptRow::as_select())
        .load(conn)
        .await?)
}

/// Dead jobs, newest first, optionally of one tenant.
pub async fn list_dead(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<JobRow>, StorageError> {
    let mut query = jobs::table
        .filter(jobs::status.eq("dead"))
        .select(JobRow::as_select())
        .order(jobs::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(tenant_id) = tenant_id {
        query = query.filter(jobs::tenant_id.eq(tenant_id));
    }
    Ok(query.load(conn).await?)
}

/// Puts a dead job back to `queued` with a fresh attempt budget and enqueues `message` in the
/// same transaction. The attempt history is kept. Returns false when the job is not dead.
pub async fn replay_dead(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
    message: NewOutboxMessage,
) -> Result<bool, StorageError> {
    conn.transaction(async |conn| {
        let updated = diesel::update(jobs::table)
            .filter(jobs::id.eq(job_id))
            .filter(jobs::status.eq("dead"))
            .set((
                jobs::status.eq("queued"),
                jobs::attempts.eq(0),
                jobs::updated_at.eq(Utc::now()),
                jobs::finished_at.eq(None::<chrono::DateTime<Utc>>),
            ))
            .execute(conn)
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        diesel::insert_into(outbox::table)
            .values(&message)
            .execute(conn)
            .await?;
        Ok(true)
    })
    .await
}
