//! Opening the object store named by a URL.
//!
//! - a path or `file:///abs/path` → local directory (created if missing), fsynced puts;
//! - `memory://` → in memory (tests, demos);
//! - `s3://bucket[/prefix]` → S3 or a compatible store (MinIO, Garage, …) with
//!   endpoint, region, credentials and allow-http from flags or the usual AWS_* env;
//! - `gs://bucket[/prefix]`, `az://container[/prefix]` → GCS, Azure (credentials from env).

use std::sync::Arc;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use spanlake_schemas::Storage;

/// Where blocks are stored, and how to reach S3-compatible stores.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StorageArgs {
    /// Object store URL: a local path or file:///path, memory://, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix
    #[arg(long = "storage", env = "SPANLAKE_STORAGE", default_value = "./data")]
    pub url: String,
    /// S3 endpoint override, for MinIO, Garage and other S3-compatible stores (e.g. http://127.0.0.1:3900)
    #[arg(long, env = "SPANLAKE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION or us-east-1)
    #[arg(long, env = "SPANLAKE_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (default: AWS_ACCESS_KEY_ID)
    #[arg(long, env = "SPANLAKE_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (default: AWS_SECRET_ACCESS_KEY)
    #[arg(long, env = "SPANLAKE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP S3 endpoints (local MinIO/Garage)
    #[arg(long, env = "SPANLAKE_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
}

impl StorageArgs {
    pub fn local(path: impl Into<String>) -> Self {
        Self { url: path.into(), ..Self::default() }
    }
}

/// Opens the store named by `args.url`.
pub fn open(args: &StorageArgs) -> anyhow::Result<Storage> {
    let url = args.url.as_str();
    if url == "memory://" || url == "memory:///" {
        return Ok(Storage::new(Arc::new(InMemory::new())));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return open_local(url);
    };
    if scheme == "file" {
        return open_local(rest);
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("storage URL {url:?} names no bucket");
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &args.s3_endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &args.s3_region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &args.s3_access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &args.s3_secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if args.s3_allow_http {
                builder = builder.with_allow_http(true);
            }
            Arc::new(builder.build().with_context(|| format!("configuring S3 store {url}"))?)
        }
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| format!("configuring GCS store {url}"))?,
        ),
        "az" | "azure" | "abfs" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .build()
                .with_context(|| format!("configuring Azure store {url}"))?,
        ),
        other => bail!(
            "unsupported storage scheme {other:?} in {url:?}: use a path, file://, memory://, s3://, gs:// or az://"
        ),
    };
    let prefix = prefix.trim_matches('/');
    Ok(if prefix.is_empty() { Storage::new(store) } else { Storage::new(Arc::new(PrefixStore::new(store, prefix))) })
}

fn open_local(path: &str) -> anyhow::Result<Storage> {
    std::fs::create_dir_all(path).with_context(|| format!("creating data directory {path}"))?;
    let root = std::fs::canonicalize(path).with_context(|| format!("resolving data directory {path}"))?;
    let store = LocalFileSystem::new_with_prefix(&root).with_context(|| format!("opening {}", root.display()))?;
    Ok(Storage::local(Arc::new(store), root))
}
