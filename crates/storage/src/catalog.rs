//! Short-lived in-memory caches of the job-type and billable-metric catalogs, so intake and
//! the worker usually read a definition without a database round trip. Entries (including
//! "no such type/metric") live `ttl`; a catalog edit is seen within that time.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tollgate_domain::usage::MetricDefinition;
use uuid::Uuid;

use crate::models::JobTypeRow;
use crate::{tenants, PgPool, StorageError};

/// (tenant, job type name or metric code).
type Key = (Uuid, String);

/// Key → the definition or its absence, with the instant it was read. Holds at most 100,000
/// entries (cleared when full).
struct TtlCache<V> {
    ttl: Duration,
    entries: RwLock<HashMap<Key, (Option<V>, Instant)>>,
}

impl<V: Clone> TtlCache<V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// `Some(entry)` while the cached entry (which may be "absent") is younger than `ttl`.
    fn fresh(&self, key: &Key) -> Option<Option<V>> {
        let entries = self.entries.read().ok()?;
        let (value, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn store(&self, key: Key, value: Option<V>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 100_000 {
                entries.clear();
            }
            entries.insert(key, (value, Instant::now()));
        }
    }
}

/// The job-type cache.
pub struct Catalog {
    cache: TtlCache<JobTypeRow>,
}

impl Catalog {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: TtlCache::new(ttl),
        }
    }

    /// The tenant's job type `name`, or `None` when the catalog has no such type.
    pub async fn job_type(
        &self,
        pool: &PgPool,
        tenant: Uuid,
        name: &str,
    ) -> Result<Option<JobTypeRow>, StorageError> {
        let key = (tenant, name.to_owned());
        if let Some(row) = self.cache.fresh(&key) {
            return Ok(row);
        }
        let mut conn = crate::pool::get(pool).await?;
        let row = tenants::find_job_type(&mut conn, tenant, name).await?;
        self.cache.store(key, row.clone());
        Ok(row)
    }
}

/// The billable-metrics cache: (tenant, code) → definition, for `ttl`.
pub struct MetricCatalog {
    cache: TtlCache<MetricDefinition>,
}

impl MetricCatalog {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: TtlCache::new(ttl),
        }
    }

    /// The tenant's metric `code`, or `None` when the catalog has no such metric.
    pub async fn metric(
        &self,
        pool: &PgPool,
        tenant: Uuid,
        code: &str,
    ) -> Result<Option<MetricDefinition>, StorageError> {
        let key = (tenant, code.to_owned());
        if let Some(definition) = self.cache.fresh(&key) {
            return Ok(definition);
        }
        let mut conn = crate::pool::get(pool).await?;
        let definition = match crate::billable_metrics::find(&mut conn, tenant, code).await? {
            Some(row) => Some(row.definition()?),
            None => None,
        };
        self.cache.store(key, definition.clone());
        Ok(definition)
    }
}
