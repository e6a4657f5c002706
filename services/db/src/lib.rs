//! Transactions that a caller going away cannot leave half-begun.
//!
//! sqlx 0.9's `Pool::begin` is not cancel-safe on PostgreSQL (sqlx issue #4393, fixed
//! upstream, unreleased): a future dropped while `BEGIN` is in flight returns the connection
//! to the pool inside a transaction sqlx does not know of, and the next borrower's statements
//! run in it, uncommitted. [`begin`] sends `BEGIN` from a task of its own, so it always
//! completes; a transaction nobody receives is dropped there and rolled back before its
//! connection is lent again. Every transaction of the stack starts here (clippy's
//! `disallowed-methods` refuses `Pool::begin` and `Connection::begin` elsewhere), which is
//! what lets the pool lend connections without a check of its own on every acquire.

use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::{Row as _, Transaction};

/// Begins a transaction on a connection of `pool`; cancel-safe (see the crate docs).
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    #[allow(clippy::disallowed_methods)] // the one place it may be called
    let task = tokio::spawn(async move { pool.begin().await });
    match task.await {
        Ok(begun) => begun,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        // Only a runtime shutting down cancels the task; its pool is going too.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}

/// True when `conn` is not inside a transaction block on the server.
///
/// PostgreSQL documents that `statement_timestamp()` equals `transaction_timestamp()` in
/// the first statement of a transaction, which is every statement outside a block. Sent with
/// the simple protocol: through the extended one, Bind starts the transaction and Execute
/// restamps the statement, so the two differ even outside a block.
pub async fn outside_transaction(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let row = sqlx::raw_sql("SELECT statement_timestamp() = transaction_timestamp()")
        .fetch_one(conn)
        .await?;
    row.try_get(0)
}
