//! Embedded diesel migrations (the repository's `migrations/` folder).

use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::StorageError;

/// All migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Applies every pending migration to the database at `url`; returns the versions applied.
/// Runs on a blocking thread (diesel's harness is synchronous).
pub async fn run_pending(url: &str) -> Result<Vec<String>, StorageError> {
    let conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|err| StorageError::Unavailable(err.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let mut harness = AsyncMigrationHarness::new(conn);
        harness
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(|v| v.to_string()).collect())
            .map_err(|err| StorageError::Unavailable(format!("migration failed: {err}")))
    })
    .await
    .map_err(|err| StorageError::Unavailable(format!("migration task failed: {err}")))?
}
