//! Tenants, API keys and the job-type catalog.

use chrono::Utc;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{ApiKeyRow, JobTypeRow, TenantRow};
use crate::schema::{api_keys, job_types, tenants};
use crate::StorageError;

/// Creates a tenant. Errors: [`StorageError::UniqueViolation`] when the name is taken.
pub async fn create_tenant(
    conn: &mut AsyncPgConnection,
    name: &str,
    rate_limit_per_minute: i32,
) -> Result<TenantRow, StorageError> {
    let row = TenantRow {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        rate_limit_per_minute,
        created_at: Utc::now(),
        time_zone: "UTC".to_owned(),
        usage_locked_before: None,
        billing_enforced: false,
        invoice_prefix: "INV".to_owned(),
        updated_at: Utc::now(),
    };
    Ok(diesel::insert_into(tenants::table)
        .values(&row)
        .returning(TenantRow::as_returning())
        .get_result(conn)
        .await?)
}

/// Finds a tenant by id.
pub async fn find_tenant(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<TenantRow>, StorageError> {
    Ok(tenants::table
        .find(id)
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Finds a tenant by its unique name.
pub async fn find_tenant_by_name(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Option<TenantRow>, StorageError> {
    Ok(tenants::table
        .filter(tenants::name.eq(name))
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Stores a new API key record (the caller made the key and hashed it).
pub async fn insert_api_key(
    conn: &mut AsyncPgConnection,
    key: &ApiKeyRow,
) -> Result<(), StorageError> {
    diesel::insert_into(api_keys::table)
        .values(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// The key with this public prefix and its tenant, revoked or not.
pub async fn find_api_key(
    conn: &mut AsyncPgConnection,
    prefix: &str,
) -> Result<Option<(ApiKeyRow, TenantRow)>, StorageError> {
    Ok(api_keys::table
        .inner_join(tenants::table)
        .filter(api_keys::prefix.eq(prefix))
        .select((ApiKeyRow::as_select(), TenantRow::as_select()))
        .first(conn)
        .await
        .optional()?)
}

/// Revokes the key with this prefix; returns false when no live key has it.
pub async fn revoke_api_key(
    conn: &mut AsyncPgConnection,
    prefix: &str,
) -> Result<bool, StorageError> {
    let n = diesel::update(api_keys::table)
        .filter(api_keys::prefix.eq(prefix))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Inserts or replaces a job type (keyed by tenant and name).
pub async fn upsert_job_type(
    conn: &mut AsyncPgConnection,
    row: &JobTypeRow,
) -> Result<JobTypeRow, StorageError> {
    Ok(diesel::insert_into(job_types::table)
        .values(row)
        .on_conflict((job_types::tenant_id, job_types::name))
        .do_update()
        .set((
            job_types::executor.eq(excluded(job_types::executor)),
            job_types::endpoint.eq(excluded(job_types::endpoint)),
            job_types::timeout_ms.eq(excluded(job_types::timeout_ms)),
            job_types::max_attempts.eq(excluded(job_types::max_attempts)),
            job_types::weight.eq(excluded(job_types::weight)),
            job_types::max_input_bytes.eq(excluded(job_types::max_input_bytes)),
            job_types::required_feature.eq(excluded(job_types::required_feature)),
            job_types::updated_at.eq(Utc::now()),
        ))
        .returning(JobTypeRow::as_returning())
        .get_result(conn)
        .await?)
}

/// One job type of a tenant.
pub async fn find_job_type(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    name: &str,
) -> Result<Option<JobTypeRow>, StorageError> {
    Ok(job_types::table
        .find((tenant_id, name))
        .select(JobTypeRow::as_select())
        .first(conn)
        .await
        .optional()?)
}
