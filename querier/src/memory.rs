//! What rows a query holds cost, for its memory pool.

use arrow::array::{Array, RecordBatch};

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
