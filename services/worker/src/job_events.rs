//! Which tenants want job events (issue 5): the worker announces `job.succeeded`,
//! `job.failed` and `job.dead` through the outbox only for tenants with an enabled webhook
//! endpoint subscribed to that type (or to `*`). Everyone else's jobs cost no extra write and
//! no extra publish: the pipeline's throughput does not pay for a feature nobody uses.
//!
//! The set is read from `webhook_endpoints` every `job_events_refresh_ms` (default 5 s), so an
//! endpoint starts receiving job events at most that long after it is created. A failed read
//! keeps the previous set and is retried on the next tick.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use tokio_util::sync::CancellationToken;
use tollgate_storage::PgPool;
use uuid::Uuid;

/// Tenant → the job event types its endpoints subscribe to (`*` = all).
#[derive(Clone, Default)]
pub struct JobEventSubscribers {
    inner: Arc<RwLock<HashMap<Uuid, HashSet<String>>>>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Array<Text>)]
    event_types: Vec<String>,
}

impl JobEventSubscribers {
    /// Whether `tenant` has an endpoint for `event_type` (e.g. `job.succeeded`).
    pub fn wants(&self, tenant: Uuid, event_type: &str) -> bool {
        let map = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&tenant)
            .is_some_and(|types| types.contains("*") || types.contains(event_type))
    }

    /// Replaces the set with what the database says now.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), tollgate_storage::StorageError> {
        let mut conn = tollgate_storage::pool::get(pool).await?;
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT tenant_id, event_types FROM webhook_endpoints \
             WHERE disabled_at IS NULL \
               AND (event_types && ARRAY['*', 'job.succeeded', 'job.failed', 'job.dead'])",
        )
        .load(&mut conn)
        .await?;
        let mut map: HashMap<Uuid, HashSet<String>> = HashMap::new();
        for row in rows {
            map.entry(row.tenant_id)
                .or_default()
                .extend(row.event_types);
        }
        *self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = map;
        Ok(())
    }

    /// Refreshes every `every` until `cancel` fires.
    pub async fn run(self, pool: PgPool, every: Duration, cancel: CancellationToken) {
        loop {
            if let Err(error) = self.refresh(&pool).await {
                tracing::debug!(%error, "reading job-event webhook subscriptions failed; keeping the last set");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    #[cfg(test)]
    fn set(&self, tenant: Uuid, types: &[&str]) {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(tenant, types.iter().map(|t| (*t).to_owned()).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_matches_the_type_or_the_wildcard_only_for_that_tenant() {
        let subs = JobEventSubscribers::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        subs.set(a, &["job.dead"]);
        subs.set(b, &["*"]);
        assert!(subs.wants(a, "job.dead"));
        assert!(!subs.wants(a, "job.succeeded"));
        assert!(subs.wants(b, "job.succeeded"));
        assert!(!subs.wants(c, "job.dead"));
    }
}
