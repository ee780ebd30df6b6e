//! Checkout and the customer portal (issue 5 "Stripe API client"): `POST /v1/billing/checkout`
//! gives an account's customer a Stripe Checkout Session in `setup` mode, where they save a
//! payment method (https://docs.stripe.com/payments/save-and-reuse?platform=checkout); when
//! it completes, Stripe's `checkout.session.completed` event links the customer and the method
//! to the account (`psp_events`). `POST /v1/billing/portal` gives a customer-portal session
//! ("manage subscription": payment methods, invoices;
//! https://docs.stripe.com/customer-management). Both create the Stripe customer first when
//! the account has none, and store it (`psp_customers`).

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;
use tollgate_psp::stripe::{CheckoutSessionParams, CustomerParams};
use tollgate_storage::models::AccountRow;
use tollgate_storage::payments::{self as store, PspCustomerRow};
use uuid::Uuid;

use crate::payments::STRIPE;
use crate::{BillingContext, BillingError};

/// A checkout session to hand to the customer.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutView {
    /// Where to send the customer (Stripe-hosted).
    pub url: String,
    /// `cs_…`
    pub session_id: String,
    /// `cus_…`
    pub customer: String,
}

/// A portal session to hand to the customer.
#[derive(Debug, Clone, Serialize)]
pub struct PortalView {
    pub url: String,
    pub customer: String,
}

/// Checks a URL the customer is sent back to: absolute http(s), at most 2048 bytes.
fn return_url(raw: &str, field: &str) -> Result<String, BillingError> {
    let ok = raw.len() <= 2048
        && url::Url::parse(raw).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(BillingError::Invalid(format!(
            "{field} must be an absolute http(s) URL of at most 2048 bytes"
        )))
    }
}

fn metadata(account: &AccountRow) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tollgate_tenant".to_owned(), account.tenant_id.to_string()),
        ("tollgate_account".to_owned(), account.id.to_string()),
    ])
}

/// The account's Stripe customer, created (idempotency key `tollgate-customer-{account}`, so
/// concurrent or repeated calls create one customer) and stored when it has none.
pub async fn ensure_customer(
    ctx: &BillingContext,
    account: &AccountRow,
) -> Result<PspCustomerRow, BillingError> {
    let stripe = ctx.payments.stripe()?;
    {
        let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
        if let Some(existing) = store::find_customer(&mut conn, account.id, STRIPE).await? {
            return Ok(existing);
        }
    }
    let customer = stripe
        .create_customer(
            &format!("tollgate-customer-{}", account.id),
            &CustomerParams {
                email: None,
                name: Some(account.name.clone()),
                metadata: metadata(account),
            },
        )
        .await
        .map_err(BillingError::Psp)?;
    let now = Utc::now();
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    Ok(store::insert_customer_if_absent(
        &mut conn,
        &PspCustomerRow {
            account_id: account.id,
            psp: STRIPE.into(),
            tenant_id: account.tenant_id,
            customer_id: customer.id,
            default_payment_method: None,
            created_at: now,
            updated_at: now,
        },
    )
    .await?)
}

/// The tenant's account named by `account_id` (`acc_…` or a UUID) or by its external id.
/// Errors: neither given or not found (422 UNKNOWN_ACCOUNT / INVALID_REQUEST).
pub async fn find_account(
    ctx: &BillingContext,
    tenant_id: Uuid,
    account_id: Option<&str>,
    external_id: Option<&str>,
) -> Result<AccountRow, BillingError> {
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    let found = match (account_id, external_id) {
        (Some(id), _) => {
            let uuid = id
                .parse::<tollgate_domain::AccountId>()
                .map(|a| a.as_uuid())
                .or_else(|_| Uuid::parse_str(id))
                .map_err(|_| BillingError::UnknownAccount(id.to_owned()))?;
            store::account_by_id(&mut conn, uuid)
                .await?
                .filter(|a| a.tenant_id == tenant_id)
                .ok_or_else(|| BillingError::UnknownAccount(id.to_owned()))?
        }
        (None, Some(external)) => {
            tollgate_storage::accounts::find_account(&mut conn, tenant_id, external)
                .await?
                .ok_or_else(|| BillingError::UnknownAccount(external.to_owned()))?
        }
        (None, None) => {
            return Err(BillingError::Invalid(
                "name the account: account_id (acc_…) or account (external id)".into(),
            ))
        }
    };
    Ok(found)
}

/// Creates a Checkout Session (mode `setup`, in the currency of the account's subscription
/// when it has one) for the account; `success_url` and `cancel_url` are where Stripe sends
/// the customer back. Errors: bad URLs (422), PSP off (503 PSP_NOT_CONFIGURED), PSP errors
/// (502/503).
pub async fn checkout(
    ctx: &BillingContext,
    account: &AccountRow,
    success_url: &str,
    cancel_url: &str,
) -> Result<CheckoutView, BillingError> {
    let success_url = return_url(success_url, "success_url")?;
    let cancel_url = return_url(cancel_url, "cancel_url")?;
    let stripe = ctx.payments.stripe()?;
    let customer = ensure_customer(ctx, account).await?;
    let currency = {
        let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
        match tollgate_storage::subscriptions::live_for_account(&mut conn, account.id).await? {
            Some(sub) => tollgate_storage::plans::plan_version(&mut conn, sub.plan_version_id)
                .await?
                .map(|p| p.version.currency.to_lowercase()),
            None => None,
        }
    };
    let session = stripe
        .create_checkout_session(
            &format!("tollgate-checkout-{}", Uuid::now_v7()),
            &CheckoutSessionParams {
                customer: customer.customer_id.clone(),
                mode: "setup".into(),
                currency,
                success_url,
                cancel_url,
                client_reference_id: Some(account.id.to_string()),
                metadata: metadata(account),
            },
        )
        .await
        .map_err(BillingError::Psp)?;
    let url = session.url.ok_or_else(|| {
        BillingError::Internal(anyhow::anyhow!(
            "Stripe returned a checkout session without a URL"
        ))
    })?;
    Ok(CheckoutView {
        url,
        session_id: session.id,
        customer: customer.customer_id,
    })
}

/// Creates a customer-portal session for the account (its customer created first when
/// missing). Errors: a bad `return_url` (422), PSP off (503), PSP errors (502/503).
pub async fn portal(
    ctx: &BillingContext,
    account: &AccountRow,
    return_to: &str,
) -> Result<PortalView, BillingError> {
    let return_to = return_url(return_to, "return_url")?;
    let stripe = ctx.payments.stripe()?;
    let customer = ensure_customer(ctx, account).await?;
    let session = stripe
        .create_portal_session(
            &format!("tollgate-portal-{}", Uuid::now_v7()),
            &customer.customer_id,
            &return_to,
        )
        .await
        .map_err(BillingError::Psp)?;
    Ok(PortalView {
        url: session.url,
        customer: customer.customer_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_must_be_absolute_http() {
        assert!(return_url("https://app.example.com/billing?ok=1", "u").is_ok());
        assert!(return_url("http://localhost:3000/done", "u").is_ok());
        for bad in [
            "/relative",
            "javascript:alert(1)",
            "ftp://x/y",
            "",
            "https://",
        ] {
            assert!(return_url(bad, "u").is_err(), "{bad}");
        }
        assert!(return_url(&format!("https://x.example/{}", "a".repeat(3000)), "u").is_err());
    }
}
