//! Compute pools and harmony groups: `computePools`, `harmonyGroups`,
//! `resizeInferencePartition`.
//!
//! A harmony group is the live view of one partition (`partition_key`) of a pool: the replicas
//! registered under it right now, from the replica registry. Pools are the store's records
//! (created when their first replica registers).

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};

use super::models::ModelView;
use super::scalars::Timestamp;
use super::{registry, store, GqlResult, OrGql};
use crate::error::ApiError;
use crate::registry::ReplicaRecord;
use crate::store::ComputePool;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum HarmonyStatus {
    Online,
    Offline,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ComputePoolCapability {
    Function,
}

#[derive(SimpleObject)]
pub struct GpuAllocation {
    pub name: String,
    pub num_gpus: i64,
    pub ranks: Vec<i64>,
    pub created_at: Timestamp,
}

#[derive(SimpleObject)]
#[graphql(name = "ComputePoolRef")]
pub struct ComputePoolRefView {
    pub key: String,
    pub name: String,
}

/// The replicas of one partition.
pub struct HarmonyGroupView {
    pub partition_key: String,
    pub pool_key: String,
    pub replicas: Vec<ReplicaRecord>,
}

#[Object(name = "HarmonyGroup")]
impl HarmonyGroupView {
    async fn id(&self) -> ID {
        ID(self.partition_key.clone())
    }
    async fn key(&self) -> &str {
        &self.partition_key
    }
    async fn compute_pool(&self, context: &Context<'_>) -> GqlResult<Option<ComputePoolRefView>> {
        let pool = store(context)?
            .find_compute_pool(&self.pool_key)
            .await
            .gql()?;
        Ok(pool.map(|pool| ComputePoolRefView {
            key: pool.key,
            name: pool.name,
        }))
    }
    async fn status(&self) -> HarmonyStatus {
        if self.replicas.iter().any(ReplicaRecord::is_routable) {
            return HarmonyStatus::Online;
        }
        HarmonyStatus::Offline
    }
    /// The first replica's advertised URL.
    async fn url(&self) -> String {
        self.replicas
            .iter()
            .min_by_key(|replica| replica.registration.ordinal)
            .map(|replica| replica.registration.advertised_url.clone())
            .unwrap_or_default()
    }
    /// GPUs across the group's replicas.
    async fn world_size(&self) -> i64 {
        self.replicas
            .iter()
            .map(|replica| i64::from(replica.registration.gpu_count))
            .sum()
    }
    async fn gpu_types(&self) -> String {
        let mut types: Vec<&str> = self
            .replicas
            .iter()
            .flat_map(|replica| replica.registration.gpu_types.iter().map(String::as_str))
            .collect();
        types.sort_unstable();
        types.dedup();
        types.join(", ")
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(
            self.replicas
                .iter()
                .map(|replica| replica.registered_at_ms)
                .min()
                .unwrap_or_default(),
        )
    }
    async fn replica_count(&self) -> i64 {
        i64::try_from(self.replicas.len()).unwrap_or(i64::MAX)
    }
    /// Registry models served by any online replica of the group.
    async fn online_models(&self, context: &Context<'_>) -> GqlResult<Vec<ModelView>> {
        let store = store(context)?;
        let mut keys: Vec<&str> = self
            .replicas
            .iter()
            .filter(|replica| replica.is_routable())
            .flat_map(|replica| {
                replica
                    .registration
                    .online_models
                    .iter()
                    .map(|model| model.key.as_str())
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut models = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(model) = store.find_model(key).await.gql()? {
                models.push(ModelView(model));
            }
        }
        Ok(models)
    }
    async fn gpu_allocations(&self) -> Option<Vec<GpuAllocation>> {
        Some(Vec::new())
    }
}

pub struct ComputePoolView(pub ComputePool);

#[Object(name = "ComputePool")]
impl ComputePoolView {
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
    async fn capabilities(&self) -> Vec<ComputePoolCapability> {
        Vec::new()
    }
    async fn harmony_groups(&self, context: &Context<'_>) -> GqlResult<Vec<HarmonyGroupView>> {
        let groups = harmony_groups(context).await?;
        Ok(groups
            .into_iter()
            .filter(|group| group.pool_key == self.0.key)
            .collect())
    }
}

async fn harmony_groups(context: &Context<'_>) -> GqlResult<Vec<HarmonyGroupView>> {
    let replicas = registry(context)?.list().await.gql()?;
    let mut by_partition: BTreeMap<String, HarmonyGroupView> = BTreeMap::new();
    for replica in replicas {
        let partition_key = replica.registration.partition_key.clone();
        let group = by_partition
            .entry(partition_key.clone())
            .or_insert_with(|| HarmonyGroupView {
                partition_key,
                pool_key: replica.registration.group.clone(),
                replicas: Vec::new(),
            });
        group.replicas.push(replica);
    }
    Ok(by_partition.into_values().collect())
}

#[derive(InputObject)]
pub struct ResizePartitionInput {
    pub compute_pool: String,
    pub size: i64,
}

#[derive(Default)]
pub struct ComputeQueries;

#[Object]
impl ComputeQueries {
    async fn compute_pools(&self, context: &Context<'_>) -> GqlResult<Vec<ComputePoolView>> {
        let pools = store(context)?.list_compute_pools().await.gql()?;
        Ok(pools.into_iter().map(ComputePoolView).collect())
    }

    async fn harmony_groups(&self, context: &Context<'_>) -> GqlResult<Vec<HarmonyGroupView>> {
        harmony_groups(context).await
    }
}

#[derive(Default)]
pub struct ComputeMutations;

#[Object]
impl ComputeMutations {
    /// Replicas are managed by the deployment (the Helm chart's StatefulSet per pool, or the
    /// one in-process replica of `adaptive serve`), so the control plane cannot resize them.
    async fn resize_inference_partition(
        &self,
        context: &Context<'_>,
        input: ResizePartitionInput,
    ) -> GqlResult<String> {
        let pool = store(context)?
            .find_compute_pool(&input.compute_pool)
            .await
            .gql()?
            .ok_or_else(|| {
                ApiError::from(crate::store::StoreError::not_found(
                    "compute pool",
                    &input.compute_pool,
                ))
                .into_graphql()
            })?;
        Err(ApiError::NotSupported(format!(
            "resizing the inference partition is not supported on pool '{}': its replicas are \
             managed by the deployment (change the pool's replicaCount in the Helm values)",
            pool.key
        ))
        .into_graphql())
    }
}
