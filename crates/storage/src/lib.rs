//! PostgreSQL storage for Tollgate on diesel + diesel-async: the schema, row types, a pooled
//! connection factory, embedded migrations, and one module of queries per table family.
//!
//! Rows are plain data (`…Row` for reads, `New…` for inserts); the services convert them into
//! their wire types. Every query that reads tenant data takes the tenant id.

pub mod accounts;
pub mod artifacts;
pub mod billable_metrics;
pub mod catalog;
pub mod entitlements;
pub mod error;
pub mod events;
pub mod group_commit;
pub mod invoices;
pub mod jobs;
pub mod ledger;
pub mod migrate;
pub mod models;
pub mod outbox;
pub mod payments;
pub mod period_usage;
pub mod plans;
pub mod pool;
pub mod schema;
pub mod schema_payments;
pub mod schema_webhooks;
pub mod snapshot;
pub mod subscriptions;
pub mod tenants;
pub mod traffic;
pub mod usage;
pub mod webhooks;

pub use diesel_async::AsyncPgConnection;
pub use error::StorageError;
pub use pool::{PgPool, PooledConn};
