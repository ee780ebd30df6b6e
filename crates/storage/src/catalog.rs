//! Short-lived in-memory caches of the job-type and billable-metric catalogs, so intake and
//! the worker usually read a definition without a database round trip. Entries (including
//! "no such type/metric") live `ttl`; a catalog edit is seen within that time.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::models::JobTypeRow;
use crate::{tenants, PgPool, StorageError};
use uuid::Uuid;

/// (tenant, job type name).
type Key = (Uuid, String);
/// The row (or its absence) and when it was read.
type Entry = (Option<JobTypeRow>, Instant);

/// The cache.
pub struct Catalog {
    ttl: Duration,
    entries: RwLock<HashMap<Key, Entry>>,
}

impl Catalog {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
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
        if let Ok(entries) = self.entries.read() {
            if let Some((row, at)) = entries.get(&key) {
                if at.elapsed() < self.ttl {
                    return Ok(row.clone());
                }
            }
        }
        let mut conn = crate::pool::get(pool).await?;
        let row = tenants::find_job_type(&mut conn, tenant, name).await?;
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 100_000 {
                entries.clear();
            }
            entries.insert(key, (row.clone(), Instant::now()));
        }
        Ok(row)
    }
}

/// The billable-metrics cache: (tenant, code) → definition, for `ttl`.
pub struct MetricCatalog {
    ttl: Duration,
    entries: RwLock<HashMap<Key, (Option<tollgate_domain::usage::MetricDefinition>, Instant)>>,
}

impl MetricCatalog {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The tenant's metric `code`, or `None` when the catalog has no such metric.
    pub async fn metric(
        &self,
        pool: &PgPool,
        tenant: Uuid,
        code: &str,
    ) -> Result<Option<tollgate_domain::usage::MetricDefinition>, StorageError> {
        let key = (tenant, code.to_owned());
        if let Ok(entries) = self.entries.read() {
            if let Some((definition, at)) = entries.get(&key) {
                if at.elapsed() < self.ttl {
                    return Ok(definition.clone());
                }
            }
        }
        let mut conn = crate::pool::get(pool).await?;
        let definition = match crate::billable_metrics::find(&mut conn, tenant, code).await? {
            Some(row) => Some(row.definition()?),
            None => None,
        };
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 100_000 {
                entries.clear();
            }
            entries.insert(key, (definition.clone(), Instant::now()));
        }
        Ok(definition)
    }
}
