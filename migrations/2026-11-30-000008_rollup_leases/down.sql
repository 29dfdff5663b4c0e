ALTER TABLE rollup_dirty
    DROP COLUMN version,
    DROP COLUMN lease_owner,
    DROP COLUMN leased_until;
