//! RabbitMQ messaging on lapin: the durable topology Tollgate declares at start-up, a broker
//! handle that reconnects with backoff and reports readiness, and publishing with publisher
//! confirms (SPEC "Messaging").

pub mod batch;
pub mod broker;
pub mod topology;

pub use broker::{Broker, BrokerConfig, MessagingError, OutgoingMessage, QueueType};
pub use topology::Topology;
