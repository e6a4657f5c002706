//! Ordering keys (SQS FIFO's message groups): the requests of one key run one at a time, in
//! submit order, across every worker.
//!
//! Of a key's live jobs exactly one is unblocked — the head — and a unique partial index
//! (`jobs_ordering_head`) makes a second one impossible. When the head's job row goes (it
//! finished, died or was cancelled), the next job of the key by submit order is unblocked in
//! the same transaction. Submits and finishes of a key hold a transaction-scoped advisory
//! lock on it, so a submit cannot find a head that is finishing meanwhile and block behind
//! it forever.

use sqlx::PgConnection;

/// Takes the advisory locks of `keys` until the end of the transaction, in one order (sorted)
/// so two transactions locking overlapping keys cannot deadlock.
pub(crate) async fn lock_keys(conn: &mut PgConnection, keys: &[&str]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    // `hashtextextended` spreads keys over the 64-bit lock space; two keys that collide only
    // share a lock (they serialise), which is harmless.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('appstack.ordering:' || k, 0))
         FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
    )
    .bind(&sorted)
    .execute(conn)
    .await?;
    Ok(())
}

/// Unblocks the next job of each key in `keys` that has no head any more. Call it under the
/// keys' locks, after the statement that removed the heads.
pub(crate) async fn promote_next(
    conn: &mut PgConnection,
    keys: &[&str],
) -> Result<u64, sqlx::Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        // It keeps its `run_at` (its submit), so its place at the front: claims find it by
        // reading from the oldest (see `ClaimWatermark`).
        "UPDATE requests.jobs j SET blocked = false
         FROM (SELECT DISTINCT ON (ordering_key) request_id, ordering_key
               FROM requests.jobs
               WHERE blocked AND ordering_key = ANY($1::text[])
               ORDER BY ordering_key, seq) next
         WHERE j.request_id = next.request_id
           AND NOT EXISTS (SELECT 1 FROM requests.jobs head
                           WHERE head.ordering_key = next.ordering_key AND NOT head.blocked)",
    )
    .bind(keys)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
