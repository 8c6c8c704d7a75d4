-- byte8-ledger-core 0025 (PostgreSQL): the trigger that queues a finished run's callback fires
-- only for a finished run of a store.
--
-- `runs_terminal_callback` (0003) called its PL/pgSQL function after every change of a run's
-- status, the claim's (queued to running) among them, and the function then found nothing to
-- do: an after-trigger event queued and a PL/pgSQL call on every claim. A `perf` profile of the
-- database at 1,000 tenants put the trigger at 7 % of the client backends' CPU. Its `WHEN` now
-- says what the function's first test said (a finished status, a run of a store), so that
-- PostgreSQL evaluates it when the row changes and queues nothing otherwise. The function is
-- unchanged: it still checks the store's binding before it queues the callback.
DROP TRIGGER runs_terminal_callback ON runs;
CREATE TRIGGER runs_terminal_callback AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (NEW.status IN ('synced', 'skipped', 'dead_lettered') AND NEW.tenant_id IS NOT NULL)
    EXECUTE FUNCTION byte8_runs_terminal_callback();
