//! API-key authentication and per-tenant rate limiting.
//!
//! A presented key is looked up by its public prefix and verified against the stored SHA-256
//! in constant time. Verified keys are cached for `key_cache_ttl` (a revoked key stops
//! working within that time). Rate limits are GCRA buckets (`governor`) per tenant and per
//! gateway replica, sized from the tenant's `rate_limit_per_minute`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_domain::{api_key, TenantId};
use tollgate_runtime::rate::PerMinuteLimits;
use tollgate_storage::{tenants, PgPool};

use crate::error::GatewayError;

/// Who a request acts for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub rate_limit_per_minute: u32,
}

/// Key verification with a short cache.
pub struct Authenticator {
    pool: PgPool,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Authenticator {
    /// A new authenticator over `pool`.
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves the `Authorization: Bearer <key>` (or `X-Api-Key`) header value.
    /// Errors: missing key, malformed/unknown/revoked key (401), database down (503).
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Principal, GatewayError> {
        let key = presented.ok_or(GatewayError::MissingApiKey)?;
        let prefix = api_key::prefix_of(key).ok_or(GatewayError::InvalidApiKey)?;
        let cache_key = hex_hash(key);
        if let Ok(cache) = self.cache.lock() {
            if let Some((principal, at)) = cache.get(&cache_key) {
                if at.elapsed() < self.ttl {
                    return Ok(principal.clone());
                }
            }
        }
        let mut conn = tollgate_storage::pool::get(&self.pool)
            .await
            .map_err(|_| GatewayError::AuthUnavailable)?;
        let found = tenants::find_api_key(&mut conn, prefix)
            .await
            .map_err(|_| GatewayError::AuthUnavailable)?;
        let (key_row, tenant) = found.ok_or(GatewayError::InvalidApiKey)?;
        if key_row.revoked_at.is_some() || !api_key::verify(key, &key_row.key_hash) {
            return Err(GatewayError::InvalidApiKey);
        }
        let principal = Principal {
            tenant: TenantId::from_uuid(tenant.id),
            rate_limit_per_minute: u32::try_from(tenant.rate_limit_per_minute)
                .unwrap_or(1)
                .max(1),
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 50_000 {
                cache.clear();
            }
            cache.insert(cache_key, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }
}

/// The cache is keyed by the key's hash so the key text itself is not kept in memory longer
/// than the request.
fn hex_hash(key: &str) -> String {
    api_key::hash(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Per-tenant request rate limits.
#[derive(Default)]
pub struct RateLimits {
    limits: PerMinuteLimits<TenantId>,
}

impl RateLimits {
    /// Takes one request from the tenant's bucket; errors with the wait before the next one
    /// is allowed (whole seconds, at least 1, for `Retry-After`).
    pub fn check(&self, principal: &Principal) -> Result<(), GatewayError> {
        let limit = principal.rate_limit_per_minute;
        self.limits
            .take(principal.tenant, limit)
            .map_err(|retry_after_secs| GatewayError::RateLimited {
                limit,
                retry_after_secs,
            })
    }
}
