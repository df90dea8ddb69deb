//! What rows a query holds cost, for its memory pool.

use std::fmt;
use std::num::NonZeroUsize;

use arrow::array::{Array, RecordBatch};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use prometheus_client::metrics::gauge::Gauge;

/// Bytes the rows of `batch` take: their slices of the buffers, not the
/// buffers' whole capacity. A batch cut from a larger array (an aggregate's
/// output, a decoder's page) would otherwise count the whole array once per
/// slice.
pub(crate) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
        .sum()
}

/// A query's memory pool (greedy, `--sql-memory-limit`, naming its largest
/// consumers when full) that also keeps the querier-wide gauge of bytes held
/// by running queries.
#[derive(Debug)]
pub(crate) struct CountedPool {
    inner: TrackConsumersPool<GreedyMemoryPool>,
    in_use: Gauge,
}

impl CountedPool {
    pub(crate) fn new(limit: usize, in_use: Gauge) -> Self {
        let top = NonZeroUsize::new(5).expect("non-zero");
        Self { inner: TrackConsumersPool::new(GreedyMemoryPool::new(limit), top), in_use }
    }
}

impl fmt::Display for CountedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl MemoryPool for CountedPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.in_use.inc_by(additional as i64);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.in_use.dec_by(shrink as i64);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> datafusion::common::Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.in_use.inc_by(additional as i64);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// Runs `frame` and collects its batches, each counted against the query's
/// pool before it is kept: over the limit, 422 with `what` and `hint`. The
/// reservation holds them until it is dropped.
pub(crate) async fn collect_counted(
    ctx: &datafusion::prelude::SessionContext,
    frame: datafusion::dataframe::DataFrame,
    what: &'static str,
    hint: &'static str,
) -> crate::error::Result<(Vec<RecordBatch>, MemoryReservation)> {
    use futures::StreamExt as _;
    let held = MemoryConsumer::new(what).register(&ctx.runtime_env().memory_pool);
    let mut rows = frame.execute_stream().await?;
    let mut batches = Vec::new();
    while let Some(batch) = rows.next().await {
        // A plan that ran out of memory on the way (an aggregate's groups)
        // says so in DataFusion's words; the answer names what grew, and
        // what to change.
        let batch = batch.map_err(|error| match crate::error::QueryError::from(error) {
            crate::error::QueryError::MemoryLimit(detail) => crate::error::QueryError::MemoryLimit(format!(
                "{what} need more than the per-query memory limit; {hint} ({detail})"
            )),
            other => other,
        })?;
        held.try_grow(batch_bytes(&batch)).map_err(|_| {
            crate::error::QueryError::MemoryLimit(format!(
                "{what} hold more than the per-query memory limit ({} bytes so far); {hint}",
                held.size()
            ))
        })?;
        batches.push(batch);
    }
    Ok((batches, held))
}
