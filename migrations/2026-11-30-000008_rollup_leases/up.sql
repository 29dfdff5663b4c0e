-- The rollup no longer holds its marks locked while it works, so that an ingest marking the
-- same (account, month) never waits for it.
--
-- version: bumped by every ingest that marks the group again (ON CONFLICT DO UPDATE). A rollup
--   deletes a mark only if its version is still the one it read: a change committed meanwhile
--   keeps the mark for the next run.
-- lease_owner, leased_until: an incremental worker claims marks in a short transaction of its
--   own (committed at once), then works in another; the lease keeps other workers off them,
--   and the worker checks at the end that it still holds every lease (a worker slower than its
--   lease rolls back rather than overwrite a newer result). A crashed worker's leases expire.
ALTER TABLE rollup_dirty
    ADD COLUMN version      bigint      NOT NULL DEFAULT 0,
    ADD COLUMN lease_owner  uuid,
    ADD COLUMN leased_until timestamptz;
