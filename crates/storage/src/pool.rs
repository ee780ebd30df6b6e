//! The connection pool (deadpool over diesel-async's `AsyncPgConnection`).

use std::time::Duration;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;

/// A pool of PostgreSQL connections. Cheap to clone.
pub type PgPool = Pool<AsyncPgConnection>;
/// A connection checked out of [`PgPool`].
pub type PooledConn = Object<AsyncPgConnection>;

/// PostgreSQL settings, the `database` section of every service's configuration.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DatabaseConfig {
    /// `postgres://…`; a secret: from the environment only, never logged.
    pub url: String,
    /// Most connections held at once.
    pub pool_size: usize,
    /// Longest wait for a connection, milliseconds.
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    /// A pool built from these settings (see [`build_pool`]).
    pub fn pool(&self) -> Result<PgPool, StorageError> {
        build_pool(
            &self.url,
            self.pool_size,
            Duration::from_millis(self.acquire_timeout_ms),
        )
    }
}

/// Builds a pool for `url` (`postgres://…`) with at most `max_size` connections. Connections
/// are opened lazily, so this succeeds while the database is down; `get` waits at most
/// `acquire_timeout` and then fails with [`StorageError::Unavailable`].
pub fn build_pool(
    url: &str,
    max_size: usize,
    acquire_timeout: Duration,
) -> Result<PgPool, StorageError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(acquire_timeout))
        .create_timeout(Some(acquire_timeout))
        .recycle_timeout(Some(acquire_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|err| StorageError::Unavailable(err.to_string()))
}

/// Checks a connection out of the pool.
pub async fn get(pool: &PgPool) -> Result<PooledConn, StorageError> {
    pool.get()
        .await
        .map_err(|err| StorageError::Unavailable(err.to_string()))
}

/// `SELECT 1` through the pool: the readiness probe's database check.
pub async fn ping(pool: &PgPool) -> Result<(), StorageError> {
    let mut conn = get(pool).await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
