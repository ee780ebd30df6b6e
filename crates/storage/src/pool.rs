//! The connection pool (deadpool over diesel-async's `AsyncPgConnection`).

use std::time::Duration;

use deadpool::managed::{Manager, Metrics, Object, Pool, RecycleError, RecycleResult};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, PoolError, PoolableConnection,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StorageError;

/// A pool of PostgreSQL connections. Cheap to clone.
pub type PgPool = Pool<PgManager>;
/// A connection checked out of [`PgPool`].
pub type PooledConn = Object<PgManager>;

/// A connection checked out again within this time of its previous checkout is handed out
/// without a test query; one idle longer is tested with `SELECT 1` first (diesel-async's
/// `RecyclingMethod::Verified`). The same trade as HikariCP's `aliveBypassWindowMs` (500 ms
/// there): under load every checkout used to cost a round trip of its own (in job-intake's
/// group commit, one statement per batch became two round trips), while a connection that
/// just worked is very likely to work again. A connection whose socket closed or whose
/// transaction state is broken is never handed out ([`PoolableConnection::is_broken`]), and
/// a rare one that fails on first use fails that call with [`StorageError::Unavailable`],
/// which every caller already retries or answers with 503.
pub const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// diesel-async's deadpool manager with [`VERIFY_AFTER_IDLE`]: it creates connections the
/// same way and tests only those idle for longer.
pub struct PgManager {
    inner: AsyncDieselConnectionManager<AsyncPgConnection>,
}

impl Manager for PgManager {
    type Type = AsyncPgConnection;
    type Error = PoolError;

    async fn create(&self) -> Result<AsyncPgConnection, PoolError> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        conn: &mut AsyncPgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<PoolError> {
        if metrics.last_used() >= VERIFY_AFTER_IDLE {
            // diesel-async's own recycling: the broken-connection check, then `SELECT 1`.
            return self.inner.recycle(conn, metrics).await;
        }
        // The same broken-connection check, without the test query.
        if std::thread::panicking() || conn.is_broken() {
            return Err(RecycleError::Message("broken connection".into()));
        }
        Ok(())
    }
}

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
    let manager = PgManager {
        inner: AsyncDieselConnectionManager::<AsyncPgConnection>::new(url),
    };
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
