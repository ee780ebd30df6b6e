ALTER TABLE payments DROP COLUMN first_sent_at;
