//! Real models through `adaptive-engine-models` (candle). Until that crate exposes its loader,
//! loading a real path fails with a clear error.

use adaptive_api_types::harmony::SpawnModel;

use crate::model::{LoadedModel, ModelError};

pub fn load(path: &std::path::Path, _request: &SpawnModel) -> Result<LoadedModel, ModelError> {
    Err(ModelError::Load {
        path: path.display().to_string(),
        reason: "real model loading is not available in this build yet".to_owned(),
    })
}
