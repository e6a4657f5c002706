//! Grouped Gets: reads of single requests that arrive together are one statement.
//!
//! A Get alone is a primary-key lookup, and what it costs is the exchange around it (the
//! statement's round trip and the pool's ping when the connection comes back), for
//! PostgreSQL and for this process alike. Gets that arrive while earlier ones are being read
//! go together into the next statement (`id = ANY($1)`, up to [`MAX_GET_BATCH`]); who may
//! see which row is decided here, per caller, exactly as [`Queue::get`] decides it. A group
//! that never reached the database fails each Get the same way; any other failure reads
//! each of them alone, so one caller's answer never depends on another's.

use std::collections::HashMap;

use futures_util::future::join_all;
use uuid::Uuid;

use super::groups::{Answer, Groups, before_the_database};
use super::{Queue, RequestRecord, RequestRow, StoreError, Viewer, request_columns};

/// The most Gets one statement reads.
pub const MAX_GET_BATCH: usize = 128;
/// Statements of Gets read at the same time.
pub const GET_BATCHES_IN_FLIGHT: usize = 2;

const GET_MANY: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM requests.requests WHERE id = ANY($1)"
);

/// Reads requests by id in groups; cheap to clone.
#[derive(Clone, Debug)]
pub struct GetBatcher {
    groups: Groups<Asked>,
}

/// A Get handed to the batcher.
#[derive(Debug)]
struct Asked {
    id: Uuid,
    /// `None` for an admin.
    owner: Option<String>,
    answer: Answer<Option<RequestRecord>>,
}

impl Asked {
    fn viewer(&self) -> Viewer<'_> {
        match &self.owner {
            Some(owner) => Viewer::Owner(owner),
            None => Viewer::Admin,
        }
    }
}

impl GetBatcher {
    /// Starts the batching task over `queue`.
    pub fn spawn(queue: Queue) -> Self {
        let groups = Groups::spawn(MAX_GET_BATCH, GET_BATCHES_IN_FLIGHT, move |batch| {
            let queue = queue.clone();
            async move { queue.read_batch(batch).await }
        });
        Self { groups }
    }

    /// Request `id`, if `viewer` may see it: [`Queue::get`], grouped with concurrent Gets.
    pub async fn get(
        &self,
        id: Uuid,
        viewer: Viewer<'_>,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let owner = viewer.owner().map(str::to_owned);
        self.groups.ask(|answer| Asked { id, owner, answer }).await
    }
}

impl Queue {
    /// Reads `batch` and answers each of its Gets.
    async fn read_batch(&self, batch: Vec<Asked>) {
        let ids: Vec<Uuid> = batch.iter().map(|asked| asked.id).collect();
        let read = sqlx::query_as::<_, RequestRow>(GET_MANY)
            .bind(ids)
            .fetch_all(&self.pool)
            .await;
        match read {
            Ok(rows) => {
                let mut found: HashMap<Uuid, (String, Result<RequestRecord, String>)> =
                    HashMap::new();
                for row in rows {
                    let (id, owner) = (row.id, row.owner.clone());
                    let record = RequestRecord::try_from(row).map_err(|error| match error {
                        StoreError::Corrupt(what) => what,
                        other => other.to_string(),
                    });
                    found.insert(id, (owner, record));
                }
                for asked in batch {
                    let answer = match found.get(&asked.id) {
                        None => Ok(None),
                        // Another owner's request is not found, readable or not.
                        Some((owner, _)) if asked.owner.as_ref().is_some_and(|o| o != owner) => {
                            Ok(None)
                        }
                        Some((_, Err(unreadable))) => Err(StoreError::Corrupt(unreadable.clone())),
                        Some((_, Ok(record))) => Ok(Some(record.clone())),
                    };
                    let _ = asked.answer.send(answer);
                }
            }
            Err(error) if before_the_database(&error).is_some() => {
                for asked in batch {
                    let same = before_the_database(&error).unwrap_or(sqlx::Error::PoolClosed);
                    let _ = asked.answer.send(Err(StoreError::Db(same)));
                }
            }
            Err(error) => {
                tracing::debug!(%error, gets = batch.len(), "a group of Gets failed; reading them one by one");
                join_all(batch.into_iter().map(|asked| async move {
                    let answer = self.get(asked.id, asked.viewer()).await;
                    let _ = asked.answer.send(answer);
                }))
                .await;
            }
        }
    }
}
