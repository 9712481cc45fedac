//! The models this replica serves: spawn (load + start an engine thread), dealloc, lookup.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use adaptive_api_types::harmony::{OnlineModel, SpawnModel};
use adaptive_engine::{Engine, SchedulerConfig, SchedulerStats};

use crate::config::EngineSettings;
use crate::error::HarmonyError;
use crate::metrics::{Metrics, ModelLabels};
use crate::model::{ChatTemplate, ModelInfo, ModelLoader, TextTokenizer};
use crate::tool_calls::forced::{ForcedFunction, ForcedToolCall, TokenTexts, ToolCallFormat};

/// One loaded model with its engine.
pub struct ServedModel {
    pub key: String,
    pub path: String,
    /// Unix seconds at load time (OpenAI's `created`).
    pub created: u64,
    pub engine: Engine,
    pub tokenizer: Arc<dyn TextTokenizer>,
    pub chat_template: Arc<dyn ChatTemplate>,
    pub info: ModelInfo,
    pub labels: ModelLabels,
    /// How this model writes tool calls (from its chat template).
    pub tool_call_format: ToolCallFormat,
    /// Each token's text, for the forced tool-call constraint.
    token_texts: Arc<TokenTexts>,
    /// Stats at the previous `/metrics` scrape, to advance counters by the difference.
    last_reported_stats: Mutex<SchedulerStats>,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("key", &self.key)
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ServedModel {
    pub fn record_metrics(&self, metrics: &Metrics) {
        let current = self.engine.stats();
        let mut previous = self
            .last_reported_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        metrics.record_scheduler_stats(&self.labels, &previous, &current);
        *previous = current;
    }

    /// Prepares a forced call to one of `functions` (see [`crate::tool_calls::forced`]).
    pub fn forced_tool_call(
        &self,
        functions: &[ForcedFunction],
    ) -> Result<ForcedToolCall, HarmonyError> {
        Ok(ForcedToolCall::prepare(
            self.tool_call_format,
            functions,
            self.tokenizer.as_ref(),
            Arc::clone(&self.token_texts),
        )?)
    }

    pub fn online_view(&self) -> OnlineModel {
        OnlineModel {
            key: self.key.clone(),
            path: self.path.clone(),
            max_seq_len: u32::try_from(self.info.max_seq_len).unwrap_or(u32::MAX),
        }
    }
}

pub struct ModelRegistry {
    loader: Arc<dyn ModelLoader>,
    settings: EngineSettings,
    pool: String,
    models: RwLock<HashMap<String, Arc<ServedModel>>>,
    loading: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRegistry")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ModelRegistry {
    pub fn new(loader: Arc<dyn ModelLoader>, settings: EngineSettings, pool: String) -> Self {
        Self {
            loader,
            settings,
            pool,
            models: RwLock::new(HashMap::new()),
            loading: Mutex::new(HashSet::new()),
        }
    }

    pub fn get(&self, key: &str) -> Result<Arc<ServedModel>, HarmonyError> {
        if let Some(model) = self.read().get(key) {
            return Ok(Arc::clone(model));
        }
        if self.loading_keys().contains(key) {
            return Err(HarmonyError::ModelLoading(key.to_owned()));
        }
        Err(HarmonyError::ModelNotFound(key.to_owned()))
    }

    pub fn list(&self) -> Vec<Arc<ServedModel>> {
        let mut models: Vec<_> = self.read().values().cloned().collect();
        models.sort_by(|a, b| a.key.cmp(&b.key));
        models
    }

    pub fn is_loaded_or_loading(&self, key: &str) -> bool {
        self.read().contains_key(key) || self.loading_keys().contains(key)
    }

    /// Loads a model and starts its engine. Idempotent for the same key and path; the same key
    /// with another path is a conflict.
    pub async fn spawn(&self, request: SpawnModel) -> Result<Arc<ServedModel>, HarmonyError> {
        if let Some(existing) = self.read().get(&request.key) {
            if existing.path == request.path {
                return Ok(Arc::clone(existing));
            }
            return Err(HarmonyError::ModelConflict {
                key: request.key,
                path: existing.path.clone(),
            });
        }
        if !self.lock_loading().insert(request.key.clone()) {
            return Err(HarmonyError::ModelLoading(request.key));
        }
        let outcome = self.load_and_start(&request).await;
        self.lock_loading().remove(&request.key);
        let model = outcome?;
        self.models
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(request.key.clone(), Arc::clone(&model));
        tracing::info!(model = %request.key, path = %request.path, "model online");
        Ok(model)
    }

    async fn load_and_start(&self, request: &SpawnModel) -> Result<Arc<ServedModel>, HarmonyError> {
        tracing::info!(model = %request.key, path = %request.path, "loading model");
        let loader = Arc::clone(&self.loader);
        let load_request = request.clone();
        let loaded = tokio::task::spawn_blocking(move || loader.load(&load_request))
            .await
            .map_err(|error| {
                HarmonyError::Internal(format!("model loading panicked: {error}"))
            })??;
        let tokenizer = Arc::clone(&loaded.tokenizer);
        let chat_template = Arc::clone(&loaded.chat_template);
        let (token_texts, tool_call_format) = tokio::task::spawn_blocking(move || {
            let token_texts = TokenTexts::build(tokenizer.as_ref())?;
            Ok::<_, crate::model::ModelError>((
                token_texts,
                ToolCallFormat::detect(chat_template.as_ref()),
            ))
        })
        .await
        .map_err(|error| HarmonyError::Internal(format!("model loading panicked: {error}")))??;
        let scheduler_config = SchedulerConfig {
            max_running_sequences: self.settings.max_running_sequences,
            max_batched_tokens: self.settings.max_batched_tokens,
            max_queued_sequences: self.settings.max_queued_sequences,
            max_seq_len: loaded.info.max_seq_len,
            eos_token_ids: loaded.info.eos_token_ids.clone(),
        };
        let engine =
            Engine::spawn(loaded.executor, scheduler_config, &request.key).map_err(|error| {
                HarmonyError::Internal(format!("cannot start the engine thread: {error}"))
            })?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Ok(Arc::new(ServedModel {
            key: request.key.clone(),
            path: request.path.clone(),
            created,
            engine,
            tokenizer: loaded.tokenizer,
            chat_template: loaded.chat_template,
            info: loaded.info,
            labels: ModelLabels {
                pool: self.pool.clone(),
                model: request.key.clone(),
            },
            last_reported_stats: Mutex::new(SchedulerStats::default()),
            tool_call_format,
            token_texts: Arc::new(token_texts),
        }))
    }

    /// Unloads a model: in-flight sequences fail with "shutting down" and its engine stops.
    pub fn dealloc(&self, key: &str) -> Result<(), HarmonyError> {
        let removed = self
            .models
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        match removed {
            Some(model) => {
                model.engine.abort();
                tracing::info!(model = %key, "model deallocated");
                Ok(())
            }
            None => Err(HarmonyError::ModelNotFound(key.to_owned())),
        }
    }

    pub fn abort_all(&self) {
        for model in self.list() {
            model.engine.abort();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<ServedModel>>> {
        self.models
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_loading(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn loading_keys(&self) -> HashSet<String> {
        self.lock_loading().clone()
    }
}
