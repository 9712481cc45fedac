//! Import and cold-load timings through SeaweedFS, each next to a raw copy of the same bytes
//! in the same run.
//!
//! ```text
//! cargo run --release -p adaptive-registry --example registry_bench [-- --synthetic-mib 1024 --repeat 3]
//! ```
//!
//! Models: the SmolLM2-135M Q4_1 GGUF (`models/`, fetched by scripts/fetch-model.sh; skipped
//! when absent) and a synthetic GGUF of `--synthetic-mib` MiB. For each:
//! - raw upload: one multipart PUT of the file with the same part size and parallelism, no
//!   hashing, no manifest;
//! - import: `import_model` (hashing, multipart, markers, manifest);
//! - raw download: one streaming GET into a file, no verification;
//! - cold load: `ModelCache::resolve` into an empty cache (parallel ranges, sha256 verified).
//!
//! Each measurement is repeated (`--repeat`, default 3) and the median reported; download
//! settings can be varied with `--concurrency` and `--chunk-mib`. Timings use wall-clock
//! `SystemTime`; this is a benchmark, not a test.

use std::path::Path;
use std::time::{Duration, SystemTime};

use adaptive_registry::{
    import_model, DownloadOptions, ImportOptions, ImportRequest, ModelCache, ModelKey, Registry,
    RegistryStore,
};
use futures::StreamExt;
use object_store::{ObjectStore, WriteMultipart};
use rand::{RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn seconds_since(start: SystemTime) -> f64 {
    start.elapsed().unwrap_or(Duration::ZERO).as_secs_f64()
}

async fn raw_upload(
    store: &RegistryStore,
    source: &Path,
    object: &str,
    options: &ImportOptions,
) -> BenchResult<f64> {
    let start = SystemTime::now();
    let path = store.path(object);
    let upload = store.object_store().put_multipart(&path).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, options.part_size);
    let mut file = tokio::fs::File::open(source).await?;
    loop {
        let mut buffer = vec![0u8; options.part_size];
        let mut filled = 0;
        while filled < buffer.len() {
            let read = tokio::io::AsyncReadExt::read(&mut file, &mut buffer[filled..]).await?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            break;
        }
        buffer.truncate(filled);
        writer
            .wait_for_capacity(options.max_concurrent_parts)
            .await?;
        writer.put(buffer.into());
    }
    writer.finish().await?;
    Ok(seconds_since(start))
}

async fn raw_download(store: &RegistryStore, object: &str, target: &Path) -> BenchResult<f64> {
    let start = SystemTime::now();
    let result = store.object_store().get(&store.path(object)).await?;
    let mut stream = result.into_stream();
    let mut file = tokio::fs::File::create(target).await?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    Ok(seconds_since(start))
}

fn synthetic_gguf(path: &Path, mib: usize) -> BenchResult<()> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    let mut tail = vec![0u8; mib << 20];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut tail);
    bytes.extend(tail);
    std::fs::write(path, bytes)?;
    Ok(())
}

struct Row {
    model: String,
    mib: f64,
    raw_upload: f64,
    import: f64,
    raw_download: f64,
    cold_load: f64,
}

/// One repetition: raw upload, import, raw download, cold load, each of fresh objects/dirs.
async fn bench_once(
    download: &DownloadOptions,
    store: &RegistryStore,
    source: &Path,
    key: &str,
    work: &Path,
) -> BenchResult<[f64; 4]> {
    let options = ImportOptions::default();
    let raw_object = format!("raw/{key}");
    let raw_upload_s = raw_upload(store, source, &raw_object, &options).await?;

    let start = SystemTime::now();
    let request = ImportRequest {
        source: source.to_path_buf(),
        key: ModelKey::parse(key)?,
        name: None,
    };
    import_model(&Registry::new(store.clone()), &request, &options).await?;
    let import_s = seconds_since(start);

    let raw_target = work.join(format!("{key}.raw"));
    let raw_download_s = raw_download(store, &raw_object, &raw_target).await?;
    std::fs::remove_file(&raw_target)?;

    let cache_dir = work.join(format!("cache-{key}"));
    let cache =
        ModelCache::new(store.clone(), &cache_dir, 8 << 30).with_download_options(download.clone());
    let start = SystemTime::now();
    cache.resolve(key).await?;
    let cold_load_s = seconds_since(start);
    std::fs::remove_dir_all(&cache_dir)?;
    Ok([raw_upload_s, import_s, raw_download_s, cold_load_s])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `repeat` repetitions; each column is the median of its repetitions.
async fn bench_model(
    download: &DownloadOptions,
    store: &RegistryStore,
    source: &Path,
    key: &str,
    work: &Path,
    repeat: usize,
) -> BenchResult<Row> {
    let size = std::fs::metadata(source)?.len();
    let mut runs = Vec::new();
    for repetition in 0..repeat.max(1) {
        let run_key = format!("{key}-{repetition}");
        let run = bench_once(download, store, source, &run_key, work).await?;
        eprintln!("{run_key}: raw upload, import, raw download, cold load = {run:.2?} s");
        runs.push(run);
    }
    let column = |index: usize| median(runs.iter().map(|run| run[index]).collect());
    Ok(Row {
        model: key.to_owned(),
        mib: size as f64 / (1 << 20) as f64,
        raw_upload: column(0),
        import: column(1),
        raw_download: column(2),
        cold_load: column(3),
    })
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let arguments: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| {
        arguments
            .iter()
            .position(|argument| argument == name)
            .and_then(|index| arguments.get(index + 1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let synthetic_mib = flag("--synthetic-mib", 1024);
    let repeat = flag("--repeat", 3);
    let defaults = DownloadOptions::default();
    let download = DownloadOptions {
        chunk_size: flag("--chunk-mib", (defaults.chunk_size >> 20) as usize) as u64 * (1 << 20),
        concurrency: flag("--concurrency", defaults.concurrency),
        ..defaults
    };
    let Some(backend) = adaptive_registry::test_util::seaweedfs().await else {
        return Err("SeaweedFS binary unavailable".into());
    };
    let work = tempfile::TempDir::new()?;
    let mut rows = Vec::new();
    let smollm2 =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if arguments
        .iter()
        .any(|argument| argument == "--skip-smollm2")
    {
        eprintln!("skipping SmolLM2 (--skip-smollm2)");
    } else if smollm2.is_file() {
        rows.push(
            bench_model(
                &download,
                &backend.store,
                &smollm2,
                "smollm2-135m-q4_1",
                work.path(),
                repeat,
            )
            .await?,
        );
    } else {
        eprintln!("skipping SmolLM2: {} missing", smollm2.display());
    }
    let synthetic = work.path().join("synthetic.gguf");
    synthetic_gguf(&synthetic, synthetic_mib)?;
    rows.push(
        bench_model(
            &download,
            &backend.store,
            &synthetic,
            &format!("synthetic-{synthetic_mib}mib"),
            work.path(),
            repeat,
        )
        .await?,
    );

    println!("| model | MiB | raw upload s | import s | import/raw | raw download s | cold load s | cold/raw |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2}x |",
            row.model,
            row.mib,
            row.raw_upload,
            row.import,
            row.import / row.raw_upload,
            row.raw_download,
            row.cold_load,
            row.cold_load / row.raw_download
        );
    }
    Ok(())
}
