//! Tollgate's shared domain vocabulary: prefixed identifiers, job states, idempotency keys,
//! the event envelope and the versioned messages that travel on each queue.
//!
//! Types here hold their invariants by construction (parse, don't validate): a function that
//! takes a [`JobTypeName`] or an [`IdempotencyKey`] never checks it again.

pub mod api_key;
pub mod billing;
pub mod envelope;
pub mod ids;
pub mod job;
pub mod psp;
pub mod usage;

pub use billing::BillingEvent;
pub use envelope::{Envelope, JobCommand, JobEvent};
pub use ids::{
    AccountId, ApiKeyId, ArtifactId, CreditNoteId, DeliveryId, EndpointId, IdError, InvoiceId,
    JobId, MessageId, PlanVersionId, SubscriptionId, TenantId, WorkspaceId,
};
pub use job::{request_hash, IdempotencyKey, JobStatus, JobTypeName, ParseError};
pub use psp::PspEvent;
