//! One conformance suite for the storage layer, run on `file://`, `memory://`
//! and a real S3-protocol server (s3s-fs) on loopback; then the whole ingest
//! and read-back path on S3.

use std::net::SocketAddr;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use spanlake::storage::{StorageArgs, open};
use spanlake::{Role, Spanlake};
use spanlake_schemas::block::BlockId;
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{BlockMeta, Storage, TenantId};

use spanlake_test_support::http::{fetch_trace, spans};
use spanlake_test_support::s3::{ACCESS_KEY, BUCKET, SECRET_KEY};

use crate::common::test_args;

pub(crate) use spanlake_test_support::s3::start_s3;

pub(crate) fn s3_args(addr: SocketAddr, prefix: &str) -> StorageArgs {
    StorageArgs::s3_compatible(&format!("http://{addr}"), BUCKET, prefix, ACCESS_KEY, SECRET_KEY)
}

fn meta(id: BlockId, size: u64) -> BlockMeta {
    BlockMeta {
        id,
        min_time_unix_nano: 10,
        max_time_unix_nano: 20,
        min_trace_id: "00".repeat(16),
        max_trace_id: "ff".repeat(16),
        span_count: 1,
        size_bytes: size,
        compaction_level: 0,
        sources: vec![],
        trace_count: 1,
        ingested_unix_nano: 0,
    }
}

/// The storage contract every backend must meet.
async fn conformance(storage: Storage) {
    // Conditional creates, which compaction leases are built on.
    let probe = object_store::path::Path::from("conformance/create-once");
    assert!(storage.create_durable(&probe, "1".into()).await.unwrap());
    assert!(!storage.create_durable(&probe, "2".into()).await.unwrap(), "a second create must fail");
    assert_eq!(storage.get_if_exists(&probe).await.unwrap().unwrap(), "1");
    storage.delete(&probe).await.unwrap();
    storage.delete(&probe).await.unwrap();
    assert!(storage.get_if_exists(&probe).await.unwrap().is_none());

    let a = TenantId::new("tenant-a").unwrap();
    let b = TenantId::new("tenant-b").unwrap();
    let block = meta(BlockId::new(), 5);
    storage.put_block(&a, &block, Bytes::from_static(b"12345")).await.unwrap();
    let got = storage.object_store().get(&Storage::block_path(&a, &block.id)).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"12345");
    // Ranged reads (the Parquet footer path).
    let range = storage.object_store().get_range(&Storage::block_path(&a, &block.id), 1..3).await.unwrap();
    assert_eq!(range.as_ref(), b"23");

    // Commits list in id (= time) order, from an offset on.
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let id = BlockId::at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + i));
        let record = CommitRecord { id: id.clone(), added: vec![meta(BlockId::new(), i)], removed: vec![] };
        storage.commit(&a, &record).await.unwrap();
        assert_eq!(
            storage.read_commit(&storage.list_commits(&a, None).await.unwrap()[i as usize]).await.unwrap(),
            record
        );
        ids.push(id);
    }
    let all = storage.list_commits(&a, None).await.unwrap();
    assert_eq!(all.len(), 3);
    let from_second: Vec<String> = storage
        .list_commits(&a, Some(ids[1].as_str()))
        .await
        .unwrap()
        .iter()
        .map(|p| p.filename().unwrap().to_owned())
        .collect();
    assert_eq!(from_second, vec![format!("{}.json", ids[1]), format!("{}.json", ids[2])]);
    let later = BlockId::lower_bound(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000));
    assert!(storage.list_commits(&a, Some(&later)).await.unwrap().is_empty());

    // Tenants are separate prefixes.
    assert!(storage.list_commits(&b, None).await.unwrap().is_empty());
    storage.commit(&b, &CommitRecord { id: BlockId::new(), added: vec![], removed: vec![] }).await.unwrap();
    let mut tenants = storage.list_tenants().await.unwrap();
    tenants.sort();
    assert_eq!(tenants, vec![a.clone(), b]);

    // A 12 MiB object (larger than one multipart part) round-trips.
    let big = Bytes::from(vec![7u8; 12 << 20]);
    let path = Path::from("v1/tenant-a/blocks/big.parquet");
    storage.put_durable(&path, big.clone()).await.unwrap();
    assert_eq!(storage.object_store().head(&path).await.unwrap().size, big.len() as u64);
}

#[tokio::test]
async fn conformance_on_file() {
    let dir = tempfile::TempDir::new().unwrap();
    conformance(open(&StorageArgs::local(dir.path().to_str().unwrap())).unwrap()).await;
    assert!(dir.path().join("v1/tenant-a/commits").is_dir());
}

#[tokio::test]
async fn conformance_on_memory() {
    conformance(open(&StorageArgs::local("memory://")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_s3() {
    let root = tempfile::TempDir::new().unwrap();
    let addr = start_s3(root.path()).await;
    conformance(open(&s3_args(addr, "conformance")).unwrap()).await;
    // The objects really are in the S3 server's bucket, under the prefix.
    assert!(root.path().join("traces/conformance/v1/tenant-a/commits").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_rejects_wrong_credentials() {
    let root = tempfile::TempDir::new().unwrap();
    let addr = start_s3(root.path()).await;
    let mut args = s3_args(addr, "x");
    args.s3_secret_access_key = Some("wrong".into());
    let storage = open(&args).unwrap();
    assert!(storage.put_durable(&Path::from("probe"), Bytes::from_static(b"x")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_read_back_on_s3() {
    let root = tempfile::TempDir::new().unwrap();
    let addr = start_s3(root.path()).await;
    let dir = tempfile::TempDir::new().unwrap();
    let mut args = test_args(&dir);
    args.storage = s3_args(addr, "spanlake");
    let server = Spanlake::start(&args, Role::All).await.unwrap();

    use opentelemetry_sdk::trace::SpanExporter as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", server.otlp_grpc_addr().unwrap()))
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .unwrap();
    let trace_id = 0x5e5e_0000_0000_0000_0000_0000_0000_0001u128;
    let span = crate::otlp_clients::minimal_span(trace_id, "s3 span");
    exporter.export(vec![span]).await.unwrap();
    let http = reqwest::Client::new();
    let trace = fetch_trace(&http, server.http_addr(), &trace_id.to_be_bytes(), None).await.expect("stored on S3");
    assert_eq!(spans(&trace)[0].name, "s3 span");
    server.shutdown().await;

    // A fresh process on the same bucket finds it through the commit log.
    let again = Spanlake::start(&args, Role::Querier).await.unwrap();
    assert!(fetch_trace(&http, again.http_addr(), &trace_id.to_be_bytes(), None).await.is_some());
    again.shutdown().await;
}
