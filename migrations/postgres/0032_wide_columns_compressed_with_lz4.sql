-- byte8-ledger-core 0032 (PostgreSQL): the wide values every event writes are compressed with
-- lz4 instead of pglz, where the server has lz4 (issue 17).
--
-- A run's row holds its event line (`raw`, about 1.1 kB in the workload generator's busy hour),
-- its policy snapshot (`policy`, 1.3 kB for the workload's policy) and its outcome; its attempt
-- holds the entity snapshot, and each ledger request is kept with its bodies (`exchanges`). A
-- row over PostgreSQL's TOAST threshold (about 2 kB) has its widest values compressed before it
-- is stored: every run's policy snapshot and about half its event lines, a third of the request
-- bodies and a fifth of the snapshots in a 10,000-event back-fill. With the default method,
-- pglz, that compression was 4.4 % of PostgreSQL's processes' CPU samples (`perf`, BENCHMARKS.md,
-- round 41). lz4 compresses several times faster and, for these values, about as small.
--
-- `SET COMPRESSION` changes what is written from now on; nothing stored is rewritten, and both
-- methods are read back alike, so the migration takes a moment whatever the tables' size (it
-- holds each table's lock for that moment). A server built without lz4 (Debian's, the official
-- images' and the major clouds' are built with it) keeps pglz: the migration then only says so.
-- Checked by the test `wide_values_are_compressed_with_lz4_where_the_server_has_it`.
DO $$
BEGIN
    ALTER TABLE runs
        ALTER COLUMN raw SET COMPRESSION lz4,
        ALTER COLUMN policy SET COMPRESSION lz4,
        ALTER COLUMN outcome SET COMPRESSION lz4;
    ALTER TABLE attempts
        ALTER COLUMN snapshot SET COMPRESSION lz4,
        ALTER COLUMN message SET COMPRESSION lz4;
    ALTER TABLE exchanges
        ALTER COLUMN request_body SET COMPRESSION lz4,
        ALTER COLUMN response_body SET COMPRESSION lz4,
        ALTER COLUMN error SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'byte8-ledger 0032: this server has no lz4 (%); wide values stay compressed with pglz', SQLERRM;
END
$$;
