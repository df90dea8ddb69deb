//! Opening the object store named by a URL.
//!
//! - a path or `file:///abs/path` → local directory (created if missing), fsynced puts;
//! - `memory://` → in memory (tests, demos);
//! - `s3://bucket[/prefix]` → S3 or a compatible store (MinIO, Garage, …) with
//!   endpoint, region, credentials and allow-http from flags or the usual AWS_* env;
//! - `gs://bucket[/prefix]`, `az://container[/prefix]` → GCS, Azure (credentials from env).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use spanlake_schemas::Storage;

/// Where blocks are stored, and how to reach S3-compatible stores.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Storage")]
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

    /// An S3-compatible store at `endpoint` (e.g. `http://127.0.0.1:3900`),
    /// bucket `bucket` under `prefix`, with static keys; plain HTTP is allowed
    /// when the endpoint is `http://`.
    pub fn s3_compatible(endpoint: &str, bucket: &str, prefix: &str, access_key_id: &str, secret: &str) -> Self {
        Self {
            url: format!("s3://{bucket}/{prefix}"),
            s3_endpoint: Some(endpoint.to_owned()),
            s3_region: Some("us-east-1".into()),
            s3_access_key_id: Some(access_key_id.to_owned()),
            s3_secret_access_key: Some(secret.to_owned()),
            s3_allow_http: endpoint.starts_with("http://"),
        }
    }

    /// Whether the URL names a remote object store, billed per request.
    pub fn is_remote(&self) -> bool {
        self.url.split_once("://").is_some_and(|(scheme, _)| !matches!(scheme, "file" | "memory"))
    }

    /// The shortest time between one tenant's block writes unless configured:
    /// on a remote store each block costs two PUTs, so 100 ms caps a busy
    /// tenant at 20 PUT/s per ingester (README: "What a block costs").
    pub fn default_min_flush_interval(&self) -> Duration {
        if self.is_remote() {
            Duration::from_millis(100)
        } else {
            spanlake_ingester::BufferConfig::default().min_flush_interval
        }
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
            let mut builder =
                AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry()).with_client_options(client());
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
                .with_retry(retry())
                .with_client_options(client())
                .build()
                .with_context(|| format!("configuring GCS store {url}"))?,
        ),
        "az" | "azure" | "abfs" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry())
                .with_client_options(client())
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

/// Bounded retries: a request (with every retry) ends well inside the
/// catalog's commit lookback (2 min), so a commit record can never land so late
/// that readers miss it. The ingester also bounds each flush by `--flush-timeout`.
fn retry() -> RetryConfig {
    RetryConfig { max_retries: 5, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() }
}

/// Bounded connect and request time, so a hung store fails fast.
fn client() -> ClientOptions {
    ClientOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(20))
}

fn open_local(path: &str) -> anyhow::Result<Storage> {
    std::fs::create_dir_all(path).with_context(|| format!("creating data directory {path}"))?;
    let root = std::fs::canonicalize(path).with_context(|| format!("resolving data directory {path}"))?;
    let store = LocalFileSystem::new_with_prefix(&root).with_context(|| format!("opening {}", root.display()))?;
    Ok(Storage::local(Arc::new(store), root))
}
