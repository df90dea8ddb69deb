//! The S3 server tests and benchmarks run on loopback: s3s-fs, with
//! conditional creates made atomic.
//!
//! s3s-fs 0.14 answers `If-None-Match: *` by checking that the object does
//! not exist and then writing it, so two racing conditional creates of one
//! key can both succeed (seen here: two compactors both took one lease).
//! S3, GCS, Azure and local files make that check and the write one atomic
//! step, and compaction leases rely on it, so this wrapper serializes
//! conditional puts; every other request goes straight to s3s-fs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "spanlake-test";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "spanlake-test-secret";
/// The bucket the server holds.
pub const BUCKET: &str = "traces";

/// Starts an S3 server (s3s-fs) on 127.0.0.1:0 serving `root`, with bucket
/// [`BUCKET`]; it serves until the runtime stops.
pub async fn start_s3(root: &std::path::Path) -> SocketAddr {
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket directory");
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs over the root");
    let mut builder = S3ServiceBuilder::new(AtomicCreates { fs, creates: tokio::sync::Mutex::new(()) });
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    addr
}

struct AtomicCreates {
    fs: s3s_fs::FileSystem,
    creates: tokio::sync::Mutex<()>,
}

type Reply<'a, T> = Pin<Box<dyn Future<Output = S3Result<S3Response<T>>> + Send + 'a>>;

macro_rules! delegate {
    ($($name:ident: $input:ident => $output:ident),* $(,)?) => {
        $(
            fn $name<'a, 'b>(&'a self, req: S3Request<$input>) -> Reply<'b, $output>
            where
                'a: 'b,
                Self: 'b,
            {
                self.fs.$name(req)
            }
        )*
    };
}

impl S3 for AtomicCreates {
    fn put_object<'a, 'b>(&'a self, req: S3Request<PutObjectInput>) -> Reply<'b, PutObjectOutput>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            if req.input.if_none_match.is_some() {
                let _one_at_a_time = self.creates.lock().await;
                return self.fs.put_object(req).await;
            }
            self.fs.put_object(req).await
        })
    }

    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput,
        copy_object: CopyObjectInput => CopyObjectOutput,
        delete_bucket: DeleteBucketInput => DeleteBucketOutput,
        delete_object: DeleteObjectInput => DeleteObjectOutput,
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
        get_object: GetObjectInput => GetObjectOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        list_buckets: ListBucketsInput => ListBucketsOutput,
        list_objects: ListObjectsInput => ListObjectsOutput,
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
        upload_part: UploadPartInput => UploadPartOutput,
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
        list_parts: ListPartsInput => ListPartsOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    }
}
