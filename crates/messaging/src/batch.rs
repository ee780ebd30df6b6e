//! Command batches: several envelopes in one AMQP message.
//!
//! Every message costs RabbitMQ the same work whatever its size: with quorum queues an
//! enqueue and a settlement go through the queue's Raft log, plus a publisher confirm, a
//! delivery and an ack on the wire. The outbox relay therefore packs the job commands it
//! claims together, at most its `commands_per_message` setting per message, and the worker
//! unpacks them. Only destinations whose consumer understands batches get them
//! ([`crate::Topology::accepts_batches`]); every other row is published as one message of
//! its own.
//!
//! Wire format: content type [`BATCH_CONTENT_TYPE`], body a JSON array of envelopes, each
//! exactly the bytes of the outbox row (so a batch is the concatenation of its rows, never a
//! re-encoding). A single envelope keeps content type [`JSON_CONTENT_TYPE`] and its
//! envelope id as the AMQP `message_id` (SPEC "Messaging"); a batch carries its own id, and
//! each envelope inside keeps its own.
//!
//! A batch is settled as one message: the worker acks it when every command in it is
//! committed and requeues the whole of it otherwise. Consumers are idempotent, so the
//! commands already done are no-ops on redelivery.

/// Content type of one JSON envelope.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Content type of a JSON array of envelopes.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.tollgate.batch+json";

/// The JSON array `[p1,p2,…]` of already-encoded JSON values, byte for byte.
///
/// Each payload must be one JSON value (an outbox row's envelope); the result is then one
/// JSON array whatever they contain.
pub fn encode_batch<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(b'[');
    for (i, payload) in payloads.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(payload);
    }
    body.push(b']');
    body
}

/// Whether a delivery with this content type is a batch. A message without a content type
/// is a single envelope (messages published before batches existed).
pub fn is_batch(content_type: Option<&str>) -> bool {
    content_type == Some(BATCH_CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_the_json_array_of_its_payloads_unchanged() {
        let a = br#"{"id":1,"data":{"s":"a,b]"}}"#;
        let b = br#"{"id":2}"#;
        let body = encode_batch([&a[..], &b[..]]);
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("a JSON array");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["data"]["s"], "a,b]");
        assert_eq!(parsed[1]["id"], 2);
        assert_eq!(encode_batch(std::iter::empty()), b"[]");
    }

    #[test]
    fn only_the_batch_content_type_is_a_batch() {
        assert!(is_batch(Some(BATCH_CONTENT_TYPE)));
        assert!(!is_batch(Some(JSON_CONTENT_TYPE)));
        assert!(!is_batch(None));
    }
}
