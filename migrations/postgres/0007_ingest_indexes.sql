-- Ingest maintains only the indexes a new row needs.
--
-- A row comes in `pending`, with no chunk. The index by outcome serves the listing of rows
-- that have one (applied, failed, rejected…) and the chunk index serves the sync's reads of a
-- chunk, so neither needs the rows still waiting to be planned: made partial, they cost
-- nothing while a body is received (a million-row CSV on PostgreSQL went from 4 index entries
-- per row to 2; BENCHMARKS.md). Queries that want them repeat the predicate, so that both
-- SQLite and PostgreSQL (with generic plans too) can prove the index applies.
DROP INDEX items_outcome_idx;
DROP INDEX items_chunk_idx;
CREATE INDEX items_settled_idx ON items (job_id, outcome, line) WHERE outcome <> 'pending';
CREATE INDEX items_chunk_idx ON items (job_id, chunk_no) WHERE chunk_no IS NOT NULL;
