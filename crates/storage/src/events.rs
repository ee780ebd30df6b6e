//! Usage-event ingestion: one transaction writes a whole batch of measured events into the
//! ledger, deduplicated by (tenant, `event:<client id>`) with `ON CONFLICT DO NOTHING`.
//!
//! The insert itself is the dedupe: there is no "claimed" state that a crash could leave
//! behind, so an event whose write failed (nothing committed) is accepted when retried, and
//! an event written once is a duplicate forever after (SPEC "Usage metering and the ledger").
//! Two clients sending the same event concurrently serialize on the unique index: one gets
//! `accepted`, the other `duplicate`.
//!
//! In the same transaction, before the insert, the batch takes share locks in a fixed order
//! (tenants, accounts, workspaces) so that a period lock (`tenants.usage_locked_before`) or a
//! personal→organization conversion committing concurrently is seen whole: an event is
//! attributed with the ownership history as it stands when the event commits.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tollgate_domain::usage::{EventRejection, Subject};
use uuid::Uuid;

use crate::accounts::{entity_at, owner_at};
use crate::models::{AccountRow, WorkspaceOwnerRow};
use crate::schema::{accounts, tenants};
use crate::StorageError;

/// A validated, measured event waiting to be written.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub tenant_id: Uuid,
    /// The client's event id (the ledger key is `event:<id>`).
    pub event_id: String,
    pub metric: String,
    pub raw_units: i64,
    pub weighted_units: i64,
    pub dimension: Option<String>,
    pub subject: Subject,
    pub occurred_at: DateTime<Utc>,
    /// Stored with the entry: the event's properties, operation and weight.
    pub context: serde_json::Value,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventWrite {
    /// Written now, by `transaction` (see [`crate::snapshot`]: the entitlement projection
    /// tells by it whether a counter it read includes the event).
    Accepted {
        transaction: crate::snapshot::TransactionId,
    },
    /// Already in the ledger (or earlier in the same batch); nothing written.
    Duplicate,
    /// Refused by a rule that needs the database: `PERIOD_FINALIZED`, `UNKNOWN_WORKSPACE`,
    /// `UNKNOWN_ACCOUNT`.
    Refused(EventRejection),
}

/// Writes `events` in one transaction. Returns one [`EventWrite`] per event, in order.
pub async fn write_events(
    conn: &mut AsyncPgConnection,
    events: Vec<PendingEvent>,
) -> Result<Vec<EventWrite>, StorageError> {
    conn.transaction::<_, StorageError, _>(async move |conn| write_in_tx(conn, &events).await)
        .await
}

#[derive(QueryableByName)]
struct FoundWorkspace {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    external_id: String,
}

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    idempotency_key: String,
    #[diesel(sql_type = Int8)]
    transaction: i64,
}

async fn write_in_tx(
    conn: &mut AsyncPgConnection,
    events: &[PendingEvent],
) -> Result<Vec<EventWrite>, StorageError> {
    // 1. Period locks, under a share lock on the tenant rows (finalization updates them).
    let tenant_ids: Vec<Uuid> = events
        .iter()
        .map(|e| e.tenant_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let locks: HashMap<Uuid, Option<DateTime<Utc>>> = tenants::table
        .filter(tenants::id.eq_any(&tenant_ids))
        .select((tenants::id, tenants::usage_locked_before))
        .for_share()
        .load::<(Uuid, Option<DateTime<Utc>>)>(conn)
        .await?
        .into_iter()
        .collect();

    // 2. Accounts named directly, then workspaces: share locks, same order as a conversion.
    let mut account_keys: (Vec<Uuid>, Vec<String>) = (Vec::new(), Vec::new());
    let mut workspace_keys: (Vec<Uuid>, Vec<String>) = (Vec::new(), Vec::new());
    for e in events {
        match &e.subject {
            Subject::Account(a) => {
                account_keys.0.push(e.tenant_id);
                account_keys.1.push(a.clone());
            }
            Subject::Workspace(w) => {
                workspace_keys.0.push(e.tenant_id);
                workspace_keys.1.push(w.clone());
            }
            Subject::None => {}
        }
    }
    let mut account_by_key: HashMap<(Uuid, String), AccountRow> = HashMap::new();
    if !account_keys.0.is_empty() {
        let wanted: HashSet<(Uuid, String)> = account_keys
            .0
            .iter()
            .copied()
            .zip(account_keys.1.iter().cloned())
            .collect();
        let found: Vec<AccountRow> = accounts::table
            .filter(accounts::tenant_id.eq_any(&account_keys.0))
            .filter(accounts::external_id.eq_any(&account_keys.1))
            .order(accounts::id)
            .select(AccountRow::as_select())
            .for_share()
            .load(conn)
            .await?;
        for a in found {
            let key = (a.tenant_id, a.external_id.clone());
            if wanted.contains(&key) {
                account_by_key.insert(key, a);
            }
        }
    }
    let mut workspace_by_key: HashMap<(Uuid, String), Uuid> = HashMap::new();
    let mut history: HashMap<Uuid, Vec<WorkspaceOwnerRow>> = HashMap::new();
    if !workspace_keys.0.is_empty() {
        let found: Vec<FoundWorkspace> = diesel::sql_query(
            "SELECT w.id, w.tenant_id, w.external_id FROM workspaces w \
             JOIN (SELECT DISTINCT t, e FROM unnest($1::uuid[], $2::text[]) AS q(t, e)) q \
               ON w.tenant_id = q.t AND w.external_id = q.e \
             ORDER BY w.id FOR SHARE OF w",
        )
        .bind::<Array<SqlUuid>, _>(&workspace_keys.0)
        .bind::<Array<Text>, _>(&workspace_keys.1)
        .load(conn)
        .await?;
        let ids: Vec<Uuid> = found.iter().map(|w| w.id).collect();
        for span in crate::accounts::ownership(conn, &ids).await? {
            history.entry(span.workspace_id).or_default().push(span);
        }
        for w in found {
            workspace_by_key.insert((w.tenant_id, w.external_id), w.id);
        }
    }

    // 3. Per event: refuse, or resolve the billing entity in force at its timestamp.
    let mut outcomes: Vec<Option<EventWrite>> = Vec::with_capacity(events.len());
    let mut rows = Rows::default();
    for e in events {
        let locked_before = locks.get(&e.tenant_id).copied().flatten();
        if locked_before.is_some_and(|lock| e.occurred_at < lock) {
            outcomes.push(Some(EventWrite::Refused(EventRejection::new(
                "PERIOD_FINALIZED",
                format!(
                    "usage before {} belongs to a finalized billing period",
                    locked_before.map(|l| l.to_rfc3339()).unwrap_or_default()
                ),
            ))));
            continue;
        }
        let (account, workspace) = match &e.subject {
            Subject::None => (None, None),
            Subject::Account(a) => match account_by_key.get(&(e.tenant_id, a.clone())) {
                Some(row) => (Some(entity_at(row, e.occurred_at)), None),
                None => {
                    outcomes.push(Some(EventWrite::Refused(EventRejection::new(
                        "UNKNOWN_ACCOUNT",
                        format!("no account with external id `{a}`"),
                    ))));
                    continue;
                }
            },
            Subject::Workspace(w) => match workspace_by_key.get(&(e.tenant_id, w.clone())) {
                Some(id) => {
                    let owner = history
                        .get(id)
                        .and_then(|spans| owner_at(spans, e.occurred_at));
                    (owner, Some(*id))
                }
                None => {
                    outcomes.push(Some(EventWrite::Refused(EventRejection::new(
                        "UNKNOWN_WORKSPACE",
                        format!("no workspace with external id `{w}`"),
                    ))));
                    continue;
                }
            },
        };
        rows.push(e, account, workspace);
        outcomes.push(None);
    }

    // 4. One INSERT for the batch; what it returns was written now, the rest were duplicates.
    // Each key written now, with the transaction that wrote it.
    let mut written: HashMap<(Uuid, String), i64> = HashMap::new();
    if !rows.tenant.is_empty() {
        let returned: Vec<Written> = diesel::sql_query(
            "INSERT INTO ledger_entries (tenant_id, idempotency_key, metric, raw_units, \
                 weighted_units, cost, source_kind, source_id, context, occurred_at, account_id, \
                 workspace_id, dimension) \
             SELECT t, k, m, r, w, 0, 'event', s, c, o, a, ws, d \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], \
                         $7::jsonb[], $8::timestamptz[], $9::uuid[], $10::uuid[], $11::text[]) \
                  AS v(t, k, m, r, w, s, c, o, a, ws, d) \
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING \
             RETURNING tenant_id, idempotency_key, \
                       pg_current_xact_id()::text::int8 AS transaction",
        )
        .bind::<Array<SqlUuid>, _>(&rows.tenant)
        .bind::<Array<Text>, _>(&rows.key)
        .bind::<Array<Text>, _>(&rows.metric)
        .bind::<Array<Int8>, _>(&rows.raw)
        .bind::<Array<Int8>, _>(&rows.weighted)
        .bind::<Array<Text>, _>(&rows.source)
        .bind::<Array<Jsonb>, _>(&rows.context)
        .bind::<Array<Timestamptz>, _>(&rows.occurred)
        .bind::<Array<Nullable<SqlUuid>>, _>(&rows.account)
        .bind::<Array<Nullable<SqlUuid>>, _>(&rows.workspace)
        .bind::<Array<Nullable<Text>>, _>(&rows.dimension)
        .load(conn)
        .await?;
        written = returned
            .into_iter()
            .map(|w| ((w.tenant_id, w.idempotency_key), w.transaction))
            .collect();
    }
    Ok(outcomes
        .into_iter()
        .zip(events)
        .map(|(outcome, e)| {
            outcome.unwrap_or_else(|| {
                // The first occurrence of a key takes the "accepted"; a repeat in the same
                // batch is a duplicate.
                match written.remove(&(e.tenant_id, ledger_key(&e.event_id))) {
                    Some(transaction) => EventWrite::Accepted {
                        transaction: crate::snapshot::TransactionId(transaction),
                    },
                    None => EventWrite::Duplicate,
                }
            })
        })
        .collect())
}

/// The ledger idempotency key of a client event id.
pub fn ledger_key(event_id: &str) -> String {
    format!("event:{event_id}")
}

/// Column arrays for the unnest INSERT.
#[derive(Default)]
struct Rows {
    tenant: Vec<Uuid>,
    key: Vec<String>,
    metric: Vec<String>,
    raw: Vec<i64>,
    weighted: Vec<i64>,
    source: Vec<String>,
    context: Vec<serde_json::Value>,
    occurred: Vec<DateTime<Utc>>,
    account: Vec<Option<Uuid>>,
    workspace: Vec<Option<Uuid>>,
    dimension: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, e: &PendingEvent, account: Option<Uuid>, workspace: Option<Uuid>) {
        self.tenant.push(e.tenant_id);
        self.key.push(ledger_key(&e.event_id));
        self.metric.push(e.metric.clone());
        self.raw.push(e.raw_units);
        self.weighted.push(e.weighted_units);
        self.source.push(e.event_id.clone());
        self.context.push(e.context.clone());
        self.occurred.push(e.occurred_at);
        self.account.push(account);
        self.workspace.push(workspace);
        self.dimension.push(e.dimension.clone());
    }
}

/// The group-commit writer for event batches: several requests' batches share one
/// transaction. Item: one request's events; output: one [`EventWrite`] per event.
pub struct EventInserter;

impl crate::group_commit::BatchWriter for EventInserter {
    type Item = Vec<PendingEvent>;
    type Output = Vec<EventWrite>;

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        items: Vec<Self::Item>,
    ) -> impl std::future::Future<Output = Result<Vec<Self::Output>, StorageError>> + Send + 'c
    {
        write_batches(conn, items)
    }
}

/// Writes several requests' batches in one transaction and splits the outcomes back.
async fn write_batches(
    conn: &mut AsyncPgConnection,
    items: Vec<Vec<PendingEvent>>,
) -> Result<Vec<Vec<EventWrite>>, StorageError> {
    let sizes: Vec<usize> = items.iter().map(Vec::len).collect();
    let all: Vec<PendingEvent> = items.into_iter().flatten().collect();
    let mut outcomes = write_events(conn, all).await?.into_iter();
    Ok(sizes
        .into_iter()
        .map(|n| outcomes.by_ref().take(n).collect())
        .collect())
}
