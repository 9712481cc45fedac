//! Datasets: `datasets(project)`, `dataset(idOrKey, project)`, `createDataset(input, file)`
//! (a GraphQL multipart upload), `createDatasetFromMultipartUpload(input)`,
//! `datasetUploadProcessingStatus(input)`, `deleteDataset(idOrKey, project)`, with the
//! documents and fields of `adaptive-sdk` 0.14 (`DatasetData`). The work is
//! [`crate::datasets`]'s.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Upload, ID};

use super::metrics::MetricView;
use super::multipart::UploadsReceived;
use super::scalars::{IdOrKey, Timestamp};
use super::{viewer, GqlResult, OrGql};
use crate::datasets::{self, records, Datasets, NewDataset};
use crate::error::ApiError;
use crate::store::Dataset;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DatasetKind {
    Prompt,
    PromptCompletion,
    PromptCompletionScore,
    Preference,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DatasetSource {
    Uploaded,
    Generated,
    Generating,
    Filtered,
}

impl DatasetSource {
    fn as_str(self) -> &'static str {
        match self {
            DatasetSource::Uploaded => "UPLOADED",
            DatasetSource::Generated => "GENERATED",
            DatasetSource::Generating => "GENERATING",
            DatasetSource::Filtered => "FILTERED",
        }
    }

    fn parse(name: &str) -> DatasetSource {
        match name {
            "GENERATED" => DatasetSource::Generated,
            "GENERATING" => DatasetSource::Generating,
            "FILTERED" => DatasetSource::Filtered,
            _ => DatasetSource::Uploaded,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DatasetStatus {
    Pending,
    Processing,
    Ready,
    Failed,
}

/// Processing of an upload, as the SDK polls it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SessionStatus {
    Pending,
    Done,
    Error,
}

pub struct DatasetView(pub Dataset);

#[Object(name = "Dataset")]
impl DatasetView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    /// What the records hold; PROMPT until the file is processed.
    async fn kind(&self) -> DatasetKind {
        match records::DatasetKind::parse(&self.0.kind) {
            Some(records::DatasetKind::PromptCompletion) => DatasetKind::PromptCompletion,
            Some(records::DatasetKind::PromptCompletionScore) => DatasetKind::PromptCompletionScore,
            Some(records::DatasetKind::Preference) => DatasetKind::Preference,
            Some(records::DatasetKind::Prompt) | None => DatasetKind::Prompt,
        }
    }
    /// How many records the file holds (known once READY).
    async fn records(&self) -> Option<i64> {
        self.0.records
    }
    async fn source(&self) -> DatasetSource {
        DatasetSource::parse(&self.0.source)
    }
    async fn status(&self) -> DatasetStatus {
        match self.0.status.as_str() {
            crate::store::DATASET_PROCESSING => DatasetStatus::Processing,
            crate::store::DATASET_READY => DatasetStatus::Ready,
            crate::store::DATASET_FAILED => DatasetStatus::Failed,
            _ => DatasetStatus::Pending,
        }
    }
    /// Fraction of the file processed, 0 to 1.
    async fn progress(&self) -> f64 {
        self.0.progress
    }
    /// Why processing failed (FAILED only).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Size of the file in bytes (known once READY).
    async fn size_bytes(&self) -> Option<i64> {
        self.0.size_bytes
    }
    /// `GET` it (with `?format=original` or `recipe`) for the file.
    async fn download_url(&self) -> String {
        datasets::download_url(&self.0)
    }
    /// Per metric of the project, how many records carry a score for it and how many a
    /// comparison on it (known once READY). Metric keys the project has no metric for are left
    /// out; see [`Datasets::metrics_usage`].
    async fn metrics_usage(&self, context: &Context<'_>) -> GqlResult<Vec<DatasetMetricUsage>> {
        let usage = service(context)?.metrics_usage(&self.0).await.gql()?;
        Ok(usage
            .into_iter()
            .map(|(metric, counts)| DatasetMetricUsage {
                score_count: counts.score_count,
                comparison_count: counts.comparison_count,
                metric: MetricView(metric),
            })
            .collect())
    }
}

#[derive(SimpleObject)]
pub struct DatasetMetricUsage {
    pub score_count: i64,
    pub comparison_count: i64,
    pub metric: MetricView,
}

#[derive(SimpleObject)]
pub struct DatasetUploadProcessingStatus {
    pub dataset_id: ID,
    pub status: SessionStatus,
    pub progress: f64,
    pub error: Option<String>,
}

impl DatasetUploadProcessingStatus {
    fn of(dataset: &Dataset) -> Self {
        let status = match datasets::session_status(dataset) {
            "DONE" => SessionStatus::Done,
            "ERROR" => SessionStatus::Error,
            _ => SessionStatus::Pending,
        };
        Self {
            dataset_id: ID(dataset.id.clone()),
            status,
            progress: dataset.progress,
            error: dataset.error.clone(),
        }
    }
}

#[derive(InputObject)]
pub struct DatasetCreate {
    pub project: String,
    pub name: String,
    pub key: Option<String>,
    pub source: Option<DatasetSource>,
}

#[derive(InputObject)]
pub struct DatasetCreateFromMultipartUpload {
    pub project: String,
    pub name: String,
    pub key: Option<String>,
    pub source: Option<DatasetSource>,
    pub upload_session_id: String,
}

#[derive(InputObject)]
pub struct DatasetUploadProcessingStatusInput {
    pub project: String,
    pub dataset_id: String,
}

fn service<'a>(context: &Context<'a>) -> GqlResult<&'a Datasets> {
    context.data::<Datasets>()
}

#[derive(Default)]
pub struct DatasetQueries;

#[Object]
impl DatasetQueries {
    async fn datasets(
        &self,
        context: &Context<'_>,
        project: IdOrKey,
    ) -> GqlResult<Vec<DatasetView>> {
        let listed = service(context)?.list(project.as_str()).await.gql()?;
        Ok(listed.into_iter().map(DatasetView).collect())
    }

    async fn dataset(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
        project: IdOrKey,
    ) -> GqlResult<Option<DatasetView>> {
        let found = service(context)?
            .find(project.as_str(), id_or_key.as_str())
            .await
            .gql()?;
        Ok(found.map(DatasetView))
    }

    async fn dataset_upload_processing_status(
        &self,
        context: &Context<'_>,
        input: DatasetUploadProcessingStatusInput,
    ) -> GqlResult<DatasetUploadProcessingStatus> {
        let dataset = service(context)?
            .get(&input.project, &input.dataset_id)
            .await
            .gql()?;
        Ok(DatasetUploadProcessingStatus::of(&dataset))
    }
}

#[derive(Default)]
pub struct DatasetMutations;

#[Object]
impl DatasetMutations {
    /// A dataset from a file sent in this request (GraphQL multipart request spec); checked
    /// and READY on return.
    async fn create_dataset(
        &self,
        context: &Context<'_>,
        input: DatasetCreate,
        file: Upload,
    ) -> GqlResult<DatasetView> {
        let uploads_received = context
            .data_opt::<UploadsReceived>()
            .map_or(0, |received| received.0);
        if *file >= uploads_received {
            return Err(ApiError::InvalidRequest(
                "'file' must name a file of this request: send it as a GraphQL multipart \
                 request (operations, map, and the file)"
                    .to_owned(),
            )
            .into_graphql());
        }
        let upload = file
            .value(context)
            .map_err(|error| ApiError::from(datasets::DatasetError::ReadUpload(error)))
            .gql()?;
        let creator = &viewer(context)?.0.user.id;
        let request = NewDataset {
            project: input.project,
            name: input.name,
            key: input.key,
            source: input.source.map(|source| source.as_str().to_owned()),
        };
        let dataset = service(context)?
            .create_from_file(creator, request, upload.content)
            .await
            .gql()?;
        Ok(DatasetView(dataset))
    }

    /// A dataset from the caller's chunked upload (`/api/v1/upload/*`, every part received):
    /// PENDING on return; poll `datasetUploadProcessingStatus`.
    async fn create_dataset_from_multipart_upload(
        &self,
        context: &Context<'_>,
        input: DatasetCreateFromMultipartUpload,
    ) -> GqlResult<DatasetUploadProcessingStatus> {
        let creator = &viewer(context)?.0.user.id;
        let request = NewDataset {
            project: input.project,
            name: input.name,
            key: input.key,
            source: input.source.map(|source| source.as_str().to_owned()),
        };
        let dataset = service(context)?
            .create_from_upload(creator, request, &input.upload_session_id)
            .await
            .gql()?;
        Ok(DatasetUploadProcessingStatus::of(&dataset))
    }

    /// Removes a dataset and its file.
    async fn delete_dataset(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
        project: IdOrKey,
    ) -> GqlResult<bool> {
        let deleted = service(context)?
            .delete(project.as_str(), id_or_key.as_str())
            .await
            .gql()?;
        if !deleted {
            return Err(ApiError::from(crate::store::StoreError::NotFound {
                what: "dataset",
                id: id_or_key.as_str().to_owned(),
            })
            .into_graphql());
        }
        Ok(true)
    }
}
