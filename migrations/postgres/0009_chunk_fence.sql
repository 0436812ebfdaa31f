-- Fencing tokens (pipeline::fence): every claim of a chunk takes the next `fence`, and every
-- statement a chunk's worker makes on the chunk's behalf (record a write's intent, renew, give
-- back, commit) names the fence it claimed with. A worker whose lease was taken over, or an
-- older run of the same process still unwinding, holds an old fence: its statements change
-- nothing, so it can never record an intent, and so never send the write that needs it.
-- Never decremented (unlike `attempts`, which a pause of the target gives back).
ALTER TABLE chunks ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
