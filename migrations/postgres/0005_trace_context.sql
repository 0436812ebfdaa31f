-- Trace context. A job keeps the W3C `traceparent` of the request that submitted it, so its
-- planning, chunks and SCIM calls (run later, by any replica) join that request's trace; an
-- outbox row keeps the one of the work that produced it, so its delivery joins that trace too.
-- NULL when tracing was off: the work then starts traces of its own.
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
ALTER TABLE webhook_outbox ADD COLUMN traceparent TEXT;
