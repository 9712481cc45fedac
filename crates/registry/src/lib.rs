//! The model registry on object storage (S3 or local): import, manifests, checksums, worker cache
