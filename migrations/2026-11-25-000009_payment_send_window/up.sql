-- When a payment was first sent to the PSP with its idempotency key. Stripe keeps an
-- idempotency key for at least 24 hours and may prune it after that
-- (https://docs.stripe.com/api/idempotent_requests): a payment still pending that long after
-- its first send must not be sent again with the same key blindly, because a charge the first
-- call created would not be found by the key any more and a second one would be made. The
-- collector then asks Stripe for the customer's PaymentIntents instead (billing's
-- `payments::collect`). NULL until the first send.
ALTER TABLE payments ADD COLUMN first_sent_at timestamptz;
