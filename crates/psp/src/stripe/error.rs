//! What a Stripe API call can fail with, decoded from the HTTP status and Stripe's error body
//! (<https://docs.stripe.com/api/errors>, <https://docs.stripe.com/error-low-level>).

use super::types::{ApiErrorBody, PaymentIntent};

/// A failed Stripe API call. Stripe's error objects are boxed so the error stays small (it
/// travels inside callers' own error enums).
///
/// | HTTP status | variant | retried by the client |
/// |---|---|---|
/// | 402 | [`StripeError::Card`] | no |
/// | 400, 404, 409, other 4xx | [`StripeError::InvalidRequest`] | no (unless `Stripe-Should-Retry: true`) |
/// | 401, 403 | [`StripeError::Authentication`] | no |
/// | 429, 5xx, connection errors, timeouts | [`StripeError::Unavailable`] once retries are spent | yes (unless `Stripe-Should-Retry: false`) |
/// | 2xx with a body that does not parse | [`StripeError::Decode`] | no |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// 402: the card was declined or could not be charged. `payment_intent` carries the
    /// PaymentIntent when Stripe returns it (a failed `confirm=true` creation), so the caller
    /// can record its id and status.
    #[error("card error ({}): {}", .0.code.as_deref().unwrap_or("unknown"), .0.message.as_deref().unwrap_or("declined"))]
    Card(Box<ApiErrorBody>),
    /// 400/404/409 and other client errors: the request itself is wrong (or, for 409, conflicts
    /// with another use of the same idempotency key). Not retried; fix the request.
    #[error("Stripe rejected the request ({status}, {}): {}", .error.r#type, .error.message.as_deref().unwrap_or("no message"))]
    InvalidRequest {
        status: u16,
        error: Box<ApiErrorBody>,
    },
    /// 401/403: the secret key is wrong, revoked or lacks the permission.
    #[error("Stripe authentication failed: {0}")]
    Authentication(String),
    /// Stripe could not be reached or kept answering 429/5xx until the retries ran out.
    /// The call may or may not have taken effect: retry later with the SAME idempotency key.
    #[error("Stripe unavailable: {0}")]
    Unavailable(String),
    /// Stripe answered 2xx with a body that is not the expected object, or a list kept
    /// claiming more pages without giving any.
    #[error("unexpected Stripe response: {0}")]
    Decode(String),
    /// The [`super::StripeConfig`] is unusable (bad `api_base`, empty `secret_key` …); raised by
    /// [`super::StripeClient::new`] only.
    #[error("invalid Stripe configuration: {0}")]
    Config(String),
}

impl StripeError {
    /// Stripe's error object, for the variants that carry one.
    pub fn api_error(&self) -> Option<&ApiErrorBody> {
        match self {
            Self::Card(error) | Self::InvalidRequest { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }

    /// The PaymentIntent Stripe attached to the error (card errors on confirmation).
    pub fn payment_intent(&self) -> Option<&PaymentIntent> {
        self.api_error()?.payment_intent.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_small_inside_callers_errors() {
        assert!(std::mem::size_of::<StripeError>() <= 40);
    }

    #[test]
    fn accessors() {
        let err = StripeError::Card(Box::new(ApiErrorBody {
            r#type: "card_error".into(),
            code: Some("card_declined".into()),
            payment_intent: Some(Box::new(PaymentIntent {
                id: "pi_1".into(),
                ..PaymentIntent::default()
            })),
            ..ApiErrorBody::default()
        }));
        assert_eq!(err.payment_intent().map(|pi| pi.id.as_str()), Some("pi_1"));
        assert_eq!(err.to_string(), "card error (card_declined): declined");
        assert!(StripeError::Unavailable("x".into()).api_error().is_none());
    }
}
