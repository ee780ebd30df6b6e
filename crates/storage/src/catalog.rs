//! A short-lived in-memory cache of the job-type catalog, so intake and the worker usually
//! read a job type without a database round trip. Entries (including "no such type")
//! live `ttl`; a catalog edit is seen within that time.

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
