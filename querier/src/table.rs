//! The `spans` table of one tenant, as a DataFusion `TableProvider`.
//!
//! Pruning happens at three levels:
//! 1. blocks: the catalog's time range and trace-id range per block, from
//!    filters on `start_time`, `end_time` and `trace_id` (no I/O);
//! 2. row groups and pages: DataFusion's Parquet source with the pushed-down
//!    predicate (statistics, page index, bloom filter on `trace_id`);
//! 3. rows: the predicate evaluated inside the Parquet decoder.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use spanlake_schemas::schema::{END_TIME, START_TIME, TRACE_ID, span_schema};
use spanlake_schemas::{BlockMeta, Storage, TenantId};

use spanlake_schemas::Catalog;

use crate::blocks::SharedBlocks;

/// The URL under which the querier's object store is registered with DataFusion.
pub(crate) const STORE_URL: &str = "spanlake://blocks/";

/// Block-level bounds derived from a query's filters.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct BlockBounds {
    /// Spans must start at or after / at or before (Unix ns).
    pub(crate) start_min: Option<i64>,
    pub(crate) start_max: Option<i64>,
    pub(crate) end_min: Option<i64>,
    /// One of these trace ids (None: any).
    pub(crate) trace_ids: Option<Vec<[u8; 16]>>,
}

impl BlockBounds {
    pub(crate) fn from_filters(filters: &[Expr]) -> Self {
        let mut bounds = Self::default();
        for filter in filters {
            bounds.add(filter);
        }
        bounds
    }

    fn add(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.add(left);
                self.add(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                        Some(op) => (c.name.as_str(), op, v),
                        None => return,
                    },
                    _ => return,
                };
                match (column, op) {
                    (START_TIME, Operator::GtEq | Operator::Gt) => self.start_min = max(self.start_min, nanos(value)),
                    (START_TIME, Operator::LtEq | Operator::Lt) => self.start_max = min(self.start_max, nanos(value)),
                    (END_TIME, Operator::GtEq | Operator::Gt) => self.end_min = max(self.end_min, nanos(value)),
                    (TRACE_ID, Operator::Eq) => {
                        if let Some(id) = trace_id(value) {
                            self.trace_ids = Some(vec![id]);
                        }
                    }
                    _ => {}
                }
            }
            Expr::InList(list) if !list.negated => {
                if let Expr::Column(c) = list.expr.as_ref()
                    && c.name == TRACE_ID
                {
                    let ids: Option<Vec<_>> = list
                        .list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => trace_id(v),
                            _ => None,
                        })
                        .collect();
                    if let Some(ids) = ids {
                        self.trace_ids = Some(ids);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether `block` may hold a span within these bounds.
    pub(crate) fn admits(&self, block: &BlockMeta) -> bool {
        // A block's spans start in [min_time, …] and end by max_time.
        self.start_min.is_none_or(|t| block.max_time_unix_nano >= t)
            && self.start_max.is_none_or(|t| block.min_time_unix_nano <= t)
            && self.end_min.is_none_or(|t| block.max_time_unix_nano >= t)
            && self.trace_ids.as_ref().is_none_or(|ids| ids.iter().any(|id| block.may_contain_trace(id)))
    }
}

fn max(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn trace_id(value: &ScalarValue) -> Option<[u8; 16]> {
    match value {
        ScalarValue::FixedSizeBinary(16, Some(bytes))
        | ScalarValue::Binary(Some(bytes))
        | ScalarValue::LargeBinary(Some(bytes))
        | ScalarValue::BinaryView(Some(bytes)) => bytes.as_slice().try_into().ok(),
        _ => None,
    }
}

/// One tenant's spans.
#[derive(Debug)]
pub(crate) struct SpansTable {
    catalog: Arc<Catalog>,
    blocks: SharedBlocks,
    tenant: TenantId,
    /// Off only to measure what pruning buys.
    pruning: bool,
}

impl SpansTable {
    pub(crate) fn new(catalog: Arc<Catalog>, blocks: SharedBlocks, tenant: TenantId, pruning: bool) -> Self {
        Self { catalog, blocks, tenant, pruning }
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        span_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bounds = if self.pruning { BlockBounds::from_filters(filters) } else { BlockBounds::default() };
        let blocks = self.catalog.blocks(&self.tenant, |b| bounds.admits(b));
        // Blocks that cannot be read, or are not of the span schema, are skipped (and reported).
        let (blocks, _skipped) = self.blocks.usable(&self.tenant, blocks).await;
        let schema = span_schema();
        if blocks.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let mut source = ParquetSource::new(schema.clone());
        if self.pruning {
            source = source.with_enable_page_index(true).with_bloom_filter_on_read(true).with_pushdown_filters(true);
            if let Some(predicate) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
        } else {
            source = source.with_enable_page_index(false).with_bloom_filter_on_read(false);
        }
        // Spread blocks over the session's partitions.
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions.min(blocks.len())];
        for (i, block) in blocks.iter().enumerate() {
            let path = Storage::block_path(&self.tenant, &block.id);
            let n = groups.len();
            groups[i % n].push(PartitionedFile::new(path.to_string(), block.size_bytes));
        }
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
