DROP TABLE dunning_notifications;
DROP TABLE dunning_attempts;
DROP TABLE dunning_cases;
CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is % and cannot be deleted', OLD.id, OLD.status
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    -- Finalized and later: only the payment/void status may move, and only forward.
    IF (to_jsonb(NEW) - ARRAY['status', 'paid_at', 'voided_at', 'void_reason', 'updated_at'])
       IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['status', 'paid_at', 'voided_at', 'void_reason', 'updated_at'])
       OR NOT (NEW.status = OLD.status
               OR (OLD.status = 'finalized' AND NEW.status IN ('paid', 'void', 'uncollectible'))
               OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))) THEN
        RAISE EXCEPTION 'invoice % is % and cannot change (BILLING_PERIOD_LOCKED)', OLD.id, OLD.status
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
ALTER TABLE invoices DROP COLUMN payment_state_at;
ALTER TABLE invoices DROP COLUMN payment_state;
DROP INDEX subscriptions_psp;
ALTER TABLE subscriptions DROP COLUMN psp_state_at;
ALTER TABLE subscriptions DROP COLUMN psp_subscription_id;
DROP TABLE psp_event_applications;
DROP TABLE payment_refunds;
DROP TABLE payments;
DROP TABLE psp_customers;
