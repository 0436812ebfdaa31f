-- Batched webhook deliveries: a batch is an outbox row of its own (event_type 'batch', its own
-- event_id = webhook-id, the whole body in payload); the rows it carries point at it through
-- batch_id and mirror its status, attempts and errors. A row with a batch_id is never sent alone.
ALTER TABLE webhook_outbox ADD COLUMN batch_id TEXT;
CREATE INDEX outbox_batch_idx ON webhook_outbox (batch_id);
-- The dispatcher claims per endpoint.
CREATE INDEX outbox_endpoint_due_idx ON webhook_outbox (endpoint, status, next_attempt_at_ms);
