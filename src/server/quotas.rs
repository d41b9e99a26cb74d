//! `permitd.v1.Quotas`: bucket state and run-time administration of resources.
//!
//! PutResource and DeleteResource write the store first (durably) and only then change the
//! live registry, under one async mutex, so the stored and the live definitions can't
//! diverge when two admins race.

use std::sync::Arc;

use prost::Message as _;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::convert::{name, quota_update, resource_from_proto, resource_to_proto};
use super::error::ServiceError;
use crate::auth::{self, Caller, Role};
use crate::engine::PermitEngine;
use crate::permits::Registry;
use crate::permits::resource::MAX_NAME_LEN;
use crate::proto::{self, quotas_server::Quotas};
use crate::store::ResourceStore;
use crate::watch::Hub;

/// Default page size of ListResources.
const DEFAULT_PAGE: usize = 100;
/// Largest page size of ListResources.
const MAX_PAGE: usize = 1000;

/// The Quotas service.
#[derive(Clone)]
pub struct QuotasService {
    registry: Registry,
    hub: Hub,
    store: Arc<dyn ResourceStore>,
    admin: Arc<Mutex<()>>,
    engine: Arc<dyn PermitEngine>,
    auth: Arc<auth::Auth>,
}

impl std::fmt::Debug for QuotasService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotasService").finish_non_exhaustive()
    }
}

impl QuotasService {
    /// A service over the registry, the watch hub and the store that persists definitions.
    #[must_use]
    pub fn new(
        registry: Registry,
        hub: Hub,
        store: Arc<dyn ResourceStore>,
        engine: Arc<dyn PermitEngine>,
        auth: Arc<auth::Auth>,
    ) -> Self {
        Self {
            registry,
            hub,
            store,
            admin: Arc::new(Mutex::new(())),
            engine,
            auth,
        }
    }
}

/// A definition on the wire as its tenant names it.
fn local_proto(caller: &Caller, def: &crate::permits::ResourceDef) -> proto::Resource {
    let mut r = resource_to_proto(def);
    r.name = caller.local(&def.name).to_owned();
    r
}

#[tonic::async_trait]
impl Quotas for QuotasService {
    async fn get_summary(
        &self,
        request: Request<proto::GetSummaryRequest>,
    ) -> Result<Response<proto::ResourceSummary>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Viewer, "GetSummary")?;
        if !self.engine.holds_buckets() {
            return Err(super::summaries::not_held_here("GetSummary"));
        }
        let s = super::summaries::get(&self.registry, &caller, request.get_ref())?;
        Ok(Response::new(s))
    }

    async fn list_partitions(
        &self,
        request: Request<proto::ListPartitionsRequest>,
    ) -> Result<Response<proto::ListPartitionsResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Viewer, "ListPartitions")?;
        if !self.engine.holds_buckets() {
            return Err(super::summaries::not_held_here("ListPartitions"));
        }
        let page = super::summaries::list(&self.registry, &caller, request.get_ref())?;
        Ok(Response::new(page))
    }

    async fn watch_summaries(
        &self,
        request: Request<proto::WatchSummariesRequest>,
    ) -> Result<Response<super::summaries::SummaryStream>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Viewer, "WatchSummaries")?;
        if !self.engine.holds_buckets() {
            return Err(super::summaries::not_held_here("WatchSummaries"));
        }
        let stream =
            super::summaries::watch(&self.registry, &self.hub, &caller.tenant, request.get_ref())?;
        Ok(Response::new(stream))
    }

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<super::watch::WatchStream>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Viewer, "Watch")?;
        let stream = super::watch::start(
            &self.registry,
            Arc::clone(&self.engine),
            &self.hub,
            &caller.tenant,
            request.get_ref(),
        )?;
        Ok(Response::new(stream))
    }

    async fn get_quota(
        &self,
        request: Request<proto::GetQuotaRequest>,
    ) -> Result<Response<proto::QuotaUpdate>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Viewer, "GetQuota")?;
        let r = request.into_inner();
        let resource = caller.qualify(&r.resource, "resource", MAX_NAME_LEN)?;
        name(&r.partition, "partition", false, MAX_NAME_LEN)?;
        let v = self.engine.quota(&resource, &r.partition).await?;
        Ok(Response::new(quota_update(&r.resource, &r.partition, &v)))
    }

    async fn list_resources(
        &self,
        request: Request<proto::ListResourcesRequest>,
    ) -> Result<Response<proto::ListResourcesResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Viewer, "ListResources")?;
        let r = request.into_inner();
        let prefix = caller.qualify_prefix(&r.prefix, "prefix", MAX_NAME_LEN)?;
        let after = if r.page_token.is_empty() {
            String::new()
        } else {
            caller
                .qualify(&r.page_token, "page_token", MAX_NAME_LEN)?
                .into_owned()
        };
        let size = match usize::try_from(r.page_size).unwrap_or(usize::MAX) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // One extra tells whether another page follows.
        let mut defs = self
            .registry
            .list_where(&prefix, &after, size + 1, |n| caller.owns(n));
        let next_page_token = if defs.len() > size {
            defs.truncate(size);
            defs.last()
                .map(|d| caller.local(&d.name).to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListResourcesResponse {
            resources: defs.iter().map(|d| local_proto(&caller, d)).collect(),
            next_page_token,
        }))
    }

    async fn put_resource(
        &self,
        request: Request<proto::PutResourceRequest>,
    ) -> Result<Response<proto::PutResourceResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Admin, "PutResource")?;
        let r = request.into_inner();
        let mut resource = r
            .resource
            .ok_or_else(|| Status::invalid_argument("resource: is required"))?;
        resource.name = caller
            .qualify(&resource.name, "resource.name", MAX_NAME_LEN)?
            .into_owned();
        let def = resource_from_proto(&resource, "resource")?;
        self.engine.admits(&def)?;
        self.registry.check_new_resource(&def.name)?;
        let stored = resource_to_proto(&def);
        let answer = local_proto(&caller, &def);
        let bytes = stored.encode_to_vec();
        let _admin = self.admin.lock().await;
        let store = Arc::clone(&self.store);
        let key = def.name.clone();
        tokio::task::spawn_blocking(move || store.put_resource(&key, &bytes))
            .await
            .map_err(ServiceError::from)?
            .map_err(ServiceError::from)?;
        let replaced = self.registry.put(def);
        // A replaced resource starts afresh on every engine.
        self.engine.defined(&stored.name, replaced).await?;
        tracing::info!(resource = %stored.name, replaced, "resource defined");
        Ok(Response::new(proto::PutResourceResponse {
            resource: Some(answer),
            replaced,
        }))
    }

    async fn reset_resource(
        &self,
        request: Request<proto::ResetResourceRequest>,
    ) -> Result<Response<proto::ResetResourceResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Admin, "ResetResource")?;
        let r = request.into_inner();
        let qualified = caller.qualify(&r.name, "name", MAX_NAME_LEN)?.into_owned();
        let _admin = self.admin.lock().await;
        let buckets = self.engine.reset(&qualified).await?;
        tracing::info!(resource = %qualified, buckets, "resource reset");
        Ok(Response::new(proto::ResetResourceResponse {
            buckets: u64::try_from(buckets).unwrap_or(u64::MAX),
        }))
    }

    async fn delete_resource(
        &self,
        request: Request<proto::DeleteResourceRequest>,
    ) -> Result<Response<proto::DeleteResourceResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Admin, "DeleteResource")?;
        let r = request.into_inner();
        let qualified = caller.qualify(&r.name, "name", MAX_NAME_LEN)?.into_owned();
        let _admin = self.admin.lock().await;
        // Its state goes first, so a resource of this name made later starts afresh;
        // should the engine fail, nothing is deleted and the error says so.
        self.engine.deleting(&qualified).await?;
        let store = Arc::clone(&self.store);
        let key = qualified.clone();
        let existed_on_disk = tokio::task::spawn_blocking(move || store.delete_resource(&key))
            .await
            .map_err(ServiceError::from)?
            .map_err(ServiceError::from)?;
        // Config-file resources live only in memory: deleting one is allowed too (until the
        // next start re-applies the file).
        let existed = self.registry.delete(&qualified) || existed_on_disk;
        self.engine.deleted(&qualified).await?;
        if !existed {
            return Err(Status::not_found(format!("unknown resource {:?}", r.name)));
        }
        tracing::info!(resource = %qualified, "resource deleted");
        Ok(Response::new(proto::DeleteResourceResponse {}))
    }
}
