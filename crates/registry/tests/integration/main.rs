//! The registry's integration tests: one suite (`suite.rs`) run against the local-directory
//! backend and against s3s-fs in-process, and an end-to-end pass against SeaweedFS.

mod fixtures;
mod instrumented;
mod suite;

macro_rules! suite_for_backend {
    ($module:ident, $make_backend:path, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $make_backend().await;
                    crate::suite::$case(&backend).await;
                }
            )*
        }
    };
}

suite_for_backend!(
    local_directory,
    adaptive_registry::test_util::local,
    [
        import_gguf_then_resolve,
        multipart_upload_over_100mb_and_parallel_download,
        resume_after_interrupted_upload,
        resume_after_killed_upload,
        corrupt_object_is_detected_and_refused,
        transient_corruption_is_retried,
        damaged_cache_is_repaired,
        cached_file_rewritten_in_place_is_fetched_again,
        delete_removes_every_object,
        lru_eviction_respects_budget,
        import_refuses_an_existing_key,
        import_smollm2_then_cold_load,
    ]
);

suite_for_backend!(
    s3s_fs,
    adaptive_registry::test_util::s3s_fs,
    [
        import_gguf_then_resolve,
        multipart_upload_over_100mb_and_parallel_download,
        resume_after_interrupted_upload,
        resume_after_killed_upload,
        corrupt_object_is_detected_and_refused,
        transient_corruption_is_retried,
        damaged_cache_is_repaired,
        cached_file_rewritten_in_place_is_fetched_again,
        delete_removes_every_object,
        lru_eviction_respects_budget,
        import_refuses_an_existing_key,
    ]
);

/// One SeaweedFS server, the whole path: the real SmolLM2 GGUF imported and cold-loaded, a
/// multipart upload over 100 MB, resume after a failed and after a killed upload, a corrupt
/// object refused, deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_end_to_end() {
    let Some(backend) = adaptive_registry::test_util::seaweedfs().await else {
        return;
    };
    suite::import_smollm2_then_cold_load(&backend).await;
    suite::multipart_upload_over_100mb_and_parallel_download(&backend).await;
    suite::resume_after_interrupted_upload(&backend).await;
    suite::resume_after_killed_upload(&backend).await;
    suite::corrupt_object_is_detected_and_refused(&backend).await;
    suite::transient_corruption_is_retried(&backend).await;
    suite::delete_removes_every_object(&backend).await;
}
