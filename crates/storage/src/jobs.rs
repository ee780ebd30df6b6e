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
use crate::schema::{job_attempts, job_dead_letters, jobs, ledger_entries, outbox};
use crate::StorageError;

/// States from which a worker may still move a job.
const LIVE_STATES: [&str; 3] = ["queued", "processing", "retrying"];

/// What [`insert_jobs`] did with one submission.
#[derive(Debug)]
pub enum InsertOutcome {
    /// A new job, committed together with its outbox message.
    Created(JobRow),
    /// A job with this idempotency key already existed; nothing was written.
    Existing(JobRow),
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
    /// `job.succeeded` for the outbox, written only if this completion moves the job (set
    /// when the tenant has a webhook endpoint for it).
    pub event: Option<NewOutboxMessage>,
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
    /// `job.dead` / `job.failed` for the outbox, written only if this failure is recorded.
    pub event: Option<NewOutboxMessage>,
}

/// Records a failed attempt and moves the job to the state `failure.next` names, inside the
/// caller's transaction. Returns false, writing nothing, when the job was already terminal.
async fn record_failure(
    conn: &mut AsyncPgConnection,
    failure: &Failure,
) -> Result<bool, StorageError> {
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
        .returning(jobs::tenant_id)
        .get_result::<Uuid>(conn)
        .await
        .optional()?;
    let Some(tenant_id) = updated else {
        return Ok(false);
    };
    if failure.next == FailureNext::Dead {
        // The dead-letter list (`list_dead`), in the transaction that makes the job dead.
        // The UPDATE above moved it from a live state, so it is not on the list yet.
        diesel::insert_into(job_dead_letters::table)
            .values((
                job_dead_letters::job_id.eq(failure.job_id),
                job_dead_letters::tenant_id.eq(tenant_id),
            ))
            .execute(conn)
            .await?;
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
    if let Some(event) = &failure.event {
        crate::outbox::enqueue(conn, event).await?;
    }
    Ok(true)
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

/// Dead jobs, newest first, optionally of one tenant: the jobs in `job_dead_letters` (written
/// when a job goes dead, deleted by [`replay_dead`]; no index on `jobs` names its status, so
/// the worker's updates of a job stay HOT, migration `2026-11-24-000008_pipeline_row_costs`).
pub async fn list_dead(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<JobRow>, StorageError> {
    let mut query = job_dead_letters::table
        .inner_join(jobs::table)
        .select(JobRow::as_select())
        .order(job_dead_letters::job_id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(tenant_id) = tenant_id {
        query = query.filter(job_dead_letters::tenant_id.eq(tenant_id));
    }
    Ok(query.load(conn).await?)
}

/// Puts a dead job back to `queued` with a fresh attempt budget, takes it off the dead-letter
/// list and enqueues `message`, in one transaction. The attempt history is kept. Returns false
/// when the job is not dead.
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
        diesel::delete(job_dead_letters::table.find(job_id))
            .execute(conn)
            .await?;
        diesel::insert_into(outbox::table)
            .values(&message)
            .execute(conn)
            .await?;
        Ok(true)
    })
    .await
}

/// Inserts queued jobs and the messages that will execute them for a batch of submissions,
/// as **one statement** (the transactional outbox without an explicit transaction: a single
/// statement is atomic, so a job and its outbox row commit together or not at all). The
/// statement ([`INSERT_JOBS`], a function with a cached plan) inserts the jobs (`ON CONFLICT
/// (tenant_id, idempotency_key) DO NOTHING`) and the new jobs' outbox rows, and returns the
/// new jobs: one round trip and one commit per batch instead of four (BEGIN, two INSERTs,
/// COMMIT).
///
/// Outcomes come back in input order. A submission whose key existed gets that job as
/// `Existing`, looked up afterwards (only then is there a second query). Two submissions of
/// one batch with the same key: the first is created, the second gets it as `Existing`.
pub async fn insert_jobs(
    conn: &mut AsyncPgConnection,
    items: Vec<(NewJob, NewOutboxMessage)>,
) -> Result<Vec<InsertOutcome>, StorageError> {
    use diesel::sql_types::{Array, Bytea, Int4, Jsonb, Nullable, Text, Uuid as SqlUuid};

    let n = items.len();
    let mut ids = Vec::with_capacity(n);
    let mut tenants = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut inputs = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut workspaces = Vec::with_capacity(n);
    let mut message_ids = Vec::with_capacity(n);
    let mut exchanges = Vec::with_capacity(n);
    let mut routing_keys = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    for (job, message) in &items {
        ids.push(job.id);
        tenants.push(job.tenant_id);
        types.push(job.job_type.as_str());
        keys.push(job.idempotency_key.as_str());
        hashes.push(job.request_hash.as_slice());
        inputs.push(&job.input);
        statuses.push(job.status.as_str());
        max_attempts.push(job.max_attempts);
        workspaces.push(job.workspace_id);
        message_ids.push(message.message_id);
        exchanges.push(message.exchange.as_str());
        routing_keys.push(message.routing_key.as_str());
        payloads.push(message.payload.as_slice());
    }
    let inserted: Vec<JobRow> = diesel::sql_query(INSERT_JOBS)
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<SqlUuid>, _>(tenants)
        .bind::<Array<Text>, _>(types)
        .bind::<Array<Text>, _>(keys)
        .bind::<Array<Bytea>, _>(hashes)
        .bind::<Array<Jsonb>, _>(inputs)
        .bind::<Array<Text>, _>(statuses)
        .bind::<Array<Int4>, _>(max_attempts)
        .bind::<Array<Nullable<SqlUuid>>, _>(workspaces)
        .bind::<Array<SqlUuid>, _>(message_ids)
        .bind::<Array<Text>, _>(exchanges)
        .bind::<Array<Text>, _>(routing_keys)
        .bind::<Array<Bytea>, _>(payloads)
        .load(conn)
        .await?;
    let created: std::collections::HashMap<Uuid, JobRow> =
        inserted.into_iter().map(|row| (row.id, row)).collect();
    // Keys this batch created, for a second submission of the same key in the batch.
    let batch_keys: std::collections::HashMap<(Uuid, &str), Uuid> = items
        .iter()
        .filter(|(job, _)| created.contains_key(&job.id))
        .map(|(job, _)| ((job.tenant_id, job.idempotency_key.as_str()), job.id))
        .collect();
    let mut outcomes = Vec::with_capacity(n);
    for (job, _) in &items {
        if let Some(row) = created.get(&job.id) {
            outcomes.push(InsertOutcome::Created(row.clone()));
            continue;
        }
        let same_batch = batch_keys
            .get(&(job.tenant_id, job.idempotency_key.as_str()))
            .and_then(|id| created.get(id))
            .cloned();
        let existing = match same_batch {
            Some(row) => row,
            // Committed by an earlier batch (a conflict waits for the other transaction).
            None => crate::entitlements::job_by_idempotency_key(
                conn,
                job.tenant_id,
                &job.idempotency_key,
            )
            .await?
            .ok_or(StorageError::NotFound)?,
        };
        outcomes.push(InsertOutcome::Existing(existing));
    }
    Ok(outcomes)
}

/// [`insert_jobs`]'s statement: `tollgate_insert_jobs` (migration
/// `2026-11-23-000007_pipeline_statements`), whose plan PostgreSQL keeps per connection.
/// `$1..$9` are the jobs' columns, `$10..$13` their outbox rows'.
const INSERT_JOBS: &str = "SELECT * FROM tollgate_insert_jobs(\
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// The [`BatchWriter`](crate::group_commit::BatchWriter) job-intake uses: [`insert_jobs`].
pub struct JobInserter;

impl crate::group_commit::BatchWriter for JobInserter {
    type Item = (NewJob, NewOutboxMessage);
    type Output = InsertOutcome;

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        items: Vec<Self::Item>,
    ) -> impl std::future::Future<Output = Result<Vec<Self::Output>, StorageError>> + Send + 'c
    {
        insert_jobs(conn, items)
    }
}

/// Marks attempts as started (`processing`), a batch in one statement: `(job id, attempt)`
/// pairs in, the started job out in input order, or `None` when the job is already terminal
/// (a duplicate or stale message) or unknown.
pub async fn start_attempts(
    conn: &mut AsyncPgConnection,
    items: Vec<(Uuid, i32)>,
) -> Result<Vec<Option<JobRow>>, StorageError> {
    use diesel::sql_types::{Array, Int4, Uuid as SqlUuid};
    let (ids, attempts): (Vec<Uuid>, Vec<i32>) = items.iter().copied().unzip();
    // `tollgate_start_attempts` (migration `2026-11-23-000007_pipeline_statements`): sets
    // `processing` on the jobs still queued, processing or retrying and returns them.
    let rows: Vec<JobRow> = diesel::sql_query("SELECT * FROM tollgate_start_attempts($1, $2)")
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<Int4>, _>(attempts)
        .load(conn)
        .await?;
    let by_id: std::collections::HashMap<Uuid, JobRow> =
        rows.into_iter().map(|row| (row.id, row)).collect();
    Ok(items.iter().map(|(id, _)| by_id.get(id).cloned()).collect())
}

/// The worker's batch writer for attempt starts: [`start_attempts`].
pub struct AttemptStarter;

impl crate::group_commit::BatchWriter for AttemptStarter {
    type Item = (Uuid, i32);
    type Output = Option<JobRow>;

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        items: Vec<Self::Item>,
    ) -> impl std::future::Future<Output = Result<Vec<Self::Output>, StorageError>> + Send + 'c
    {
        start_attempts(conn, items)
    }
}

/// A finished attempt, for [`finish_attempts`].
#[derive(Debug, Clone)]
pub enum Finished {
    /// Boxed: a success carries its output and ledger entry, a failure much less.
    Success(Box<Success>),
    Failure(Failure),
}

/// Commits a batch of finished attempts in one transaction: successes with one UPDATE, one
/// INSERT of their attempt records and one INSERT of their ledger entries (`ON CONFLICT DO
/// NOTHING` on the ledger's idempotency key) and one INSERT of the outbox rows of their
/// `job.succeeded` events; failures one by one. Returns, per item, whether
/// it moved the job (false: the job was already terminal, nothing written for it).
pub async fn finish_attempts(
    conn: &mut AsyncPgConnection,
    items: Vec<Finished>,
) -> Result<Vec<bool>, StorageError> {
    use diesel::sql_types::{Array, Int4, Int8, Jsonb, Uuid as SqlUuid};

    #[derive(QueryableByName)]
    struct Moved {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }

    conn.transaction(async |conn| {
        let successes: Vec<&Success> = items
            .iter()
            .filter_map(|item| match item {
                Finished::Success(success) => Some(&**success),
                Finished::Failure(_) => None,
            })
            .collect();
        let mut moved = std::collections::HashSet::new();
        if !successes.is_empty() {
            // `tollgate_complete_jobs` (migration `2026-11-23-000007_pipeline_statements`):
            // moves the jobs still live to `succeeded` with their output and cost, returns
            // their ids.
            let rows: Vec<Moved> = diesel::sql_query(
                "SELECT t.id FROM tollgate_complete_jobs($1, $2, $3, $4, $5) AS t (id)",
            )
            .bind::<Array<SqlUuid>, _>(successes.iter().map(|s| s.job_id).collect::<Vec<_>>())
            .bind::<Array<Int4>, _>(successes.iter().map(|s| s.attempt).collect::<Vec<_>>())
            .bind::<Array<Jsonb>, _>(
                successes
                    .iter()
                    .map(|s| s.output.clone())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Int8>, _>(successes.iter().map(|s| s.units).collect::<Vec<_>>())
            .bind::<Array<Int8>, _>(successes.iter().map(|s| s.cost).collect::<Vec<_>>())
            .load(conn)
            .await?;
            let transitioned: std::collections::HashSet<Uuid> =
                rows.into_iter().map(|r| r.id).collect();
            // One record per job even when a batch holds the same job twice.
            let mut billed = Vec::new();
            for success in &successes {
                if transitioned.contains(&success.job_id) && moved.insert(success.job_id) {
                    billed.push(*success);
                }
            }
            if !billed.is_empty() {
                let attempts: Vec<NewJobAttempt> = billed
                    .iter()
                    .map(|s| NewJobAttempt {
                        job_id: s.job_id,
                        attempt: s.attempt,
                        outcome: "succeeded".to_owned(),
                        error: None,
                        http_status: None,
                        duration_ms: s.duration_ms,
                    })
                    .collect();
                diesel::insert_into(job_attempts::table)
                    .values(&attempts)
                    .execute(conn)
                    .await?;
                let mut entries: Vec<NewLedgerEntry> =
                    billed.iter().map(|s| s.ledger_entry.clone()).collect();
                attribute_to_owners(conn, &mut entries).await?;
                diesel::insert_into(ledger_entries::table)
                    .values(entries)
                    .on_conflict((ledger_entries::tenant_id, ledger_entries::idempotency_key))
                    .do_nothing()
                    .execute(conn)
                    .await?;
                let events: Vec<&NewOutboxMessage> =
                    billed.iter().filter_map(|s| s.event.as_ref()).collect();
                if !events.is_empty() {
                    diesel::insert_into(outbox::table)
                        .values(events)
                        .execute(conn)
                        .await?;
                }
            }
        }
        let mut results = Vec::with_capacity(items.len());
        let mut answered = std::collections::HashSet::new();
        for item in &items {
            match item {
                Finished::Success(success) => {
                    // The first item of a job that moved reports true; repeats report false.
                    results
                        .push(moved.contains(&success.job_id) && answered.insert(success.job_id));
                }
                Finished::Failure(failure) => results.push(record_failure(conn, failure).await?),
            }
        }
        Ok(results)
    })
    .await
}

/// The worker's batch writer for finished attempts: [`finish_attempts`].
pub struct AttemptFinisher;

impl crate::group_commit::BatchWriter for AttemptFinisher {
    type Item = Finished;
    type Output = bool;

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        items: Vec<Self::Item>,
    ) -> impl std::future::Future<Output = Result<Vec<Self::Output>, StorageError>> + Send + 'c
    {
        finish_attempts(conn, items)
    }
}

/// Fills the billing entity of entries that name a workspace: the owner in force at each
/// entry's `occurred_at`, read under a share lock on the workspaces so that a concurrent
/// personal→organization conversion lands wholly before or after (same rule as usage events,
/// `crate::events`). One query for the whole batch; none when no entry names a workspace.
async fn attribute_to_owners(
    conn: &mut AsyncPgConnection,
    entries: &mut [NewLedgerEntry],
) -> Result<(), StorageError> {
    use crate::schema::workspaces;
    let ids: Vec<Uuid> = entries
        .iter()
        .filter(|e| e.account_id.is_none())
        .filter_map(|e| e.workspace_id)
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    workspaces::table
        .filter(workspaces::id.eq_any(&ids))
        .order(workspaces::id)
        .select(workspaces::id)
        .for_share()
        .load::<Uuid>(conn)
        .await?;
    let mut history: std::collections::HashMap<Uuid, Vec<crate::models::WorkspaceOwnerRow>> =
        std::collections::HashMap::new();
    for span in crate::accounts::ownership(conn, &ids).await? {
        history.entry(span.workspace_id).or_default().push(span);
    }
    for entry in entries.iter_mut().filter(|e| e.account_id.is_none()) {
        if let Some(spans) = entry.workspace_id.and_then(|ws| history.get(&ws)) {
            entry.account_id = crate::accounts::owner_at(spans, entry.occurred_at);
        }
    }
    Ok(())
}
