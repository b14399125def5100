//! Admin API request handling: bearer-token check, routing to one handler per endpoint, JSON in
//! and out, and the single mapping of every failure to an HTTP status and error code.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::NodeStatusSource;
use super::wire::{
    API_PREFIX, AddBucketRequest, AddManagerRequest, ApiError, ClusterStatus, CreateUserRequest,
    Deleted, FileRecovered, ManagerAdded, NodeInfo, RebalanceStatus, RecoveryStatus, RingDump,
    RingSummary, StartRequest, UpdateAclRequest, UserInfo, decode_path_segment,
};
use crate::cluster::RingRecord;
use crate::{BucketAcl, Manager, ManagerError, ManagerState};

/// Largest request body accepted (admin requests are tiny JSON documents).
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;
/// Path of the Prometheus exposition (outside `/v1`, and served without the token).
pub const METRICS_PATH: &str = "/metrics";
/// Content type of the exposition (OpenMetrics text, which Prometheus reads).
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every handler needs; one per server thread.
pub(super) struct AdminContext {
    manager: Arc<Manager>,
    status: Arc<dyn NodeStatusSource>,
    /// `Bearer <token>`, compared in constant time with the request's header.
    expected_authorization: Vec<u8>,
}

impl AdminContext {
    pub(super) fn new(manager: Arc<Manager>, status: Arc<dyn NodeStatusSource>) -> AdminContext {
        let expected_authorization = format!("Bearer {}", manager.admin_token()).into_bytes();
        AdminContext {
            manager,
            status,
            expected_authorization,
        }
    }
}

/// A failed request: HTTP status, stable code, sentence.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<ManagerError> for Failure {
    fn from(err: ManagerError) -> Failure {
        let (status, code) = match &err {
            ManagerError::InvalidBucketName { .. } => {
                (StatusCode::BAD_REQUEST, "InvalidBucketName")
            }
            ManagerError::InvalidUserId { .. } => (StatusCode::BAD_REQUEST, "InvalidUserId"),
            ManagerError::InvalidCredentials(_) => (StatusCode::BAD_REQUEST, "InvalidCredentials"),
            ManagerError::BucketAlreadyExists(_) => (StatusCode::CONFLICT, "BucketAlreadyExists"),
            ManagerError::BucketAlreadyOwnedByYou(_) => {
                (StatusCode::CONFLICT, "BucketAlreadyOwnedByYou")
            }
            ManagerError::UserExists(_) => (StatusCode::CONFLICT, "UserAlreadyExists"),
            ManagerError::UserOwnsBuckets(_) => (StatusCode::CONFLICT, "UserOwnsBuckets"),
            ManagerError::UserNamedInPolicy(_) => (StatusCode::CONFLICT, "UserNamedInPolicy"),
            ManagerError::NoSuchBucket(_) => (StatusCode::NOT_FOUND, "NoSuchBucket"),
            ManagerError::BucketNotEmpty(_) => (StatusCode::CONFLICT, "BucketNotEmpty"),
            ManagerError::NoSuchUser(_) => (StatusCode::NOT_FOUND, "NoSuchUser"),
            ManagerError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
            ManagerError::Stopped | ManagerError::Unreachable(_) | ManagerError::Raft(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            ManagerError::ReadOnlyCopy => (StatusCode::CONFLICT, "ReadOnlyCopy"),
            ManagerError::NoSuchNode(_) => (StatusCode::NOT_FOUND, "NoSuchNode"),
            ManagerError::NodeConflict(_) => (StatusCode::CONFLICT, "NodeConflict"),
            ManagerError::InvalidConsistency(_) => (StatusCode::BAD_REQUEST, "InvalidConsistency"),
            ManagerError::InvalidSetting(_) => (StatusCode::BAD_REQUEST, "InvalidSetting"),
            ManagerError::AdminBind { .. }
            | ManagerError::Remote(_)
            | ManagerError::Thread(_)
            | ManagerError::Io { .. }
            | ManagerError::Corrupt { .. } => {
                tracing::error!(%err, "admin API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        };
        Failure::new(status, code, err.to_string())
    }
}

type Reply = Result<Response<Full<Bytes>>, Failure>;

/// Answers one request; never fails at the HTTP level (errors become JSON answers).
pub(super) async fn handle(
    context: &AdminContext,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match route(context, request).await {
        Ok(response) => response,
        Err(failure) => json_response(
            failure.status,
            &ApiError {
                error: failure.code.to_owned(),
                message: failure.message,
            },
        ),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), "admin API request");
    response
}

async fn route(context: &AdminContext, request: Request<Incoming>) -> Reply {
    if request.uri().path() == METRICS_PATH && request.method() == Method::GET {
        let text = super::metrics::render(
            &context.status.node_status(),
            context.manager.group_status().as_ref(),
            &context.manager.snapshot(),
        );
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
        );
        return Ok(response);
    }
    if context.manager.is_read_only_copy() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "NoManagerRole",
            "this node has no manager role: its admin listener serves /metrics only; use a \
             manager's admin API",
        ));
    }
    authorize(context, &request)?;
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return Err(not_found(&path));
    };
    let mut segments = Vec::new();
    for raw in rest.split('/').skip(1) {
        let segment = decode_path_segment(raw).ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "InvalidPath",
                format!("malformed path {path}"),
            )
        })?;
        segments.push(segment);
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    match (segments.as_slice(), method) {
        (["status"], Method::GET) => json_ok(&context.status.node_status()),
        (["users"], Method::GET) => json_ok(&list_users(&context.manager.snapshot())),
        (["users"], Method::POST) => {
            let body: CreateUserRequest = read_json(request).await?;
            let credentials = context.manager.create_user(&body.user_id)?;
            Ok(json_response(StatusCode::CREATED, &credentials))
        }
        (["users", user_id], Method::DELETE) => delete_user(context, user_id),
        (["buckets"], Method::GET) => {
            let snapshot = context.manager.snapshot();
            json_ok(&snapshot.buckets.values().collect::<Vec<_>>())
        }
        (["buckets"], Method::POST) => {
            let body: AddBucketRequest = read_json(request).await?;
            add_bucket(context, body)
        }
        (["buckets", name], Method::DELETE) => delete_bucket(context, name),
        (["managers"], Method::GET) => json_ok(
            &context
                .manager
                .group_status()
                .ok_or(ManagerError::ReadOnlyCopy)?,
        ),
        (["managers"], Method::POST) => {
            let body: AddManagerRequest = read_json(request).await?;
            let node_id = context.manager.add_manager(&body.addr)?;
            let added = ManagerAdded {
                node_id,
                addr: body.addr,
            };
            Ok(json_response(StatusCode::CREATED, &added))
        }
        (["managers", node_id], Method::DELETE) => {
            let id: u64 = node_id.parse().map_err(|_| {
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidNodeId",
                    format!("{node_id:?} is not a manager's node id (see leofs-adm managers)"),
                )
            })?;
            context.manager.remove_manager(id)?;
            json_ok(&Deleted {
                deleted: node_id.to_string(),
            })
        }
        (["cluster"], Method::GET) => json_ok(&cluster_status(&context.manager)),
        (["cluster", "start"], Method::POST) => {
            let body: StartRequest = read_json(request).await?;
            let expected = body.expected_shards;
            let ring = context
                .manager
                .start_cluster(body.partitions, expected, body.replicas)?;
            Ok(json_response(StatusCode::CREATED, &ring_summary(&ring)))
        }
        (["cluster", "auto-recover"], Method::PUT) => {
            let body: super::wire::AutoRecoverRequest = read_json(request).await?;
            context.manager.set_auto_recover_after(body.after_secs)?;
            json_ok(&cluster_status(&context.manager))
        }
        (["cache", "purge"], Method::POST) => {
            let body: super::wire::PurgeCacheRequest = read_json(request).await?;
            json_ok(
                &context
                    .manager
                    .purge_cache(&body.bucket, &body.key, body.prefix)?,
            )
        }
        (["cluster", "tombstone-grace"], Method::PUT) => {
            let body: super::wire::TombstoneGraceRequest = read_json(request).await?;
            context.manager.set_tombstone_grace(body.grace_secs)?;
            json_ok(&cluster_status(&context.manager))
        }
        (["cluster", "consistency"], Method::PUT) => {
            let body: crate::cluster::Consistency = read_json(request).await?;
            context.manager.set_consistency(body)?;
            json_ok(&cluster_status(&context.manager))
        }
        (["ring"], Method::GET) => {
            let state = context.manager.snapshot();
            let ring = state.ring.clone().ok_or_else(not_started)?;
            json_ok(&RingDump {
                summary: ring_summary(&ring),
                nodes: state
                    .nodes
                    .values()
                    .map(|m| (m.id, m.addr.clone()))
                    .collect(),
                ring,
            })
        }
        (["nodes", id], Method::GET) => json_ok(&node_info(&context.manager, node_id(id)?)?),
        (["nodes", id, "suspend"], Method::POST) => {
            let id = node_id(id)?;
            context.manager.suspend_node(id)?;
            json_ok(&node_info(&context.manager, id)?)
        }
        (["nodes", id, "detach"], Method::POST) => {
            let id = node_id(id)?;
            context.manager.detach_node(id)?;
            json_ok(&node_info(&context.manager, id)?)
        }
        (["nodes", id, "attach"], Method::POST) => {
            let id = node_id(id)?;
            context.manager.attach_node(id)?;
            json_ok(&node_info(&context.manager, id)?)
        }
        (["nodes", id, "rollback"], Method::POST) => {
            let id = node_id(id)?;
            context.manager.rollback_node(id)?;
            json_ok(&node_info(&context.manager, id)?)
        }
        (["rebalance"], Method::GET) => json_ok(&rebalance_status(&context.manager)?),
        (["nodes", id, "compact", verb], Method::POST) => {
            let id = node_id(id)?;
            let action = match *verb {
                "start" => crate::cluster::CompactAction::Start,
                "suspend" => crate::cluster::CompactAction::Suspend,
                "resume" => crate::cluster::CompactAction::Resume,
                _ => return Err(not_found(&path)),
            };
            context.manager.compact(id, action)?;
            json_ok(&node_info(&context.manager, id)?)
        }
        (["nodes", id, "recover"], Method::POST) => {
            context.manager.recover_node(node_id(id)?)?;
            json_ok(&recovery_status(&context.manager)?)
        }
        (["recovery"], Method::GET) => json_ok(&recovery_status(&context.manager)?),
        (["recover-file", bucket, key], Method::POST) => {
            let state = context.manager.snapshot();
            let found = state
                .bucket(bucket)
                .ok_or_else(|| ManagerError::NoSuchBucket((*bucket).to_owned()))?;
            if state.ring.is_none() {
                return Err(not_started());
            }
            let unreachable = |why: String| {
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", why)
            };
            let repaired = context
                .status
                .recover_file(found, key)
                .ok_or_else(|| unreachable("this node cannot reach the storage nodes".into()))?
                .map_err(unreachable)?;
            json_ok(&FileRecovered {
                bucket: (*bucket).to_owned(),
                key: (*key).to_owned(),
                repaired,
            })
        }
        (["rebalance"], Method::POST) => {
            // A node attached moments ago may not have sent its first heartbeat yet: the plan
            // waits for it (a short while) rather than leaving it out.
            let deadline = std::time::Instant::now() + crate::cluster::NODE_STOPPED_AFTER;
            while !context.manager.attached_not_heard_yet().is_empty()
                && std::time::Instant::now() < deadline
            {
                monoio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            context.manager.rebalance()?;
            json_ok(&rebalance_status(&context.manager)?)
        }
        (["rebalance", "abort"], Method::POST) => {
            context.manager.abort_rebalance()?;
            json_ok(&rebalance_status(&context.manager)?)
        }
        (["rebalance", "suspend"], Method::POST) => {
            context.manager.suspend_rebalance(true)?;
            json_ok(&rebalance_status(&context.manager)?)
        }
        (["rebalance", "resume"], Method::POST) => {
            context.manager.suspend_rebalance(false)?;
            json_ok(&rebalance_status(&context.manager)?)
        }
        (["nodes", id, "resume"], Method::POST) => {
            let id = node_id(id)?;
            context.manager.resume_node(id)?;
            json_ok(&node_info(&context.manager, id)?)
        }
        (["whereis", bucket, key], Method::GET) => {
            let state = context.manager.snapshot();
            let bucket = state
                .bucket(bucket)
                .ok_or_else(|| ManagerError::NoSuchBucket((*bucket).to_owned()))?;
            if state.ring.is_none() {
                return Err(not_started());
            }
            let found = context.status.whereis(bucket, key).ok_or_else(|| {
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "this node cannot reach the storage nodes",
                )
            })?;
            json_ok(&found)
        }
        (["buckets", name, "consistency"], Method::PUT) => {
            let body: super::wire::BucketConsistencyRequest = read_json(request).await?;
            json_ok(
                &context
                    .manager
                    .set_bucket_consistency(name, body.consistency)?,
            )
        }
        (["buckets", name, "acl"], Method::PUT) => {
            let name = (*name).to_owned();
            let body: UpdateAclRequest = read_json(request).await?;
            update_acl(context, &name, body)
        }
        (
            ["status"]
            | ["users"]
            | ["users", _]
            | ["buckets"]
            | ["buckets", _]
            | ["buckets", _, "acl"]
            | ["buckets", _, "consistency"]
            | ["managers"]
            | ["managers", _]
            | ["cluster"]
            | ["cluster", "start"]
            | [
                "cluster",
                "consistency" | "auto-recover" | "tombstone-grace",
            ]
            | ["ring"]
            | ["nodes", _]
            | [
                "nodes",
                _,
                "suspend" | "resume" | "attach" | "detach" | "rollback" | "recover",
            ]
            | ["nodes", _, "compact", _]
            | ["rebalance"]
            | ["rebalance", "suspend" | "resume" | "abort"]
            | ["recovery"]
            | ["whereis", _, _]
            | ["recover-file", _, _],
            method,
        ) => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(not_found(&path)),
    }
}

fn not_started() -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        "NotStarted",
        "the cluster has no ring yet: run leofs-adm start",
    )
}

fn node_id(text: &str) -> Result<u32, Failure> {
    text.parse().map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidNodeId",
            format!("{text:?} is not a node id (see leofs-adm status)"),
        )
    })
}

fn rebalance_status(manager: &Manager) -> Result<RebalanceStatus, Failure> {
    let state = manager.snapshot();
    let ring = state.ring.as_ref().ok_or_else(not_started)?;
    // Only nodes heard from lately: a node gone for good does not hold the phase forever.
    let beats: Vec<_> = state
        .nodes
        .keys()
        .filter_map(|id| manager.liveness().recent(*id))
        .collect();
    let foreign_partitions = beats
        .iter()
        .flat_map(|b| b.shards.iter())
        .map(|s| s.foreign_partitions)
        .sum();
    let moved_bytes = beats
        .iter()
        .flat_map(|b| b.shards.iter())
        .map(|s| s.rebalance_moved_bytes)
        .sum();
    let nodes_behind = crate::cluster::nodes_behind(&state.nodes, ring, manager.liveness());
    let phase = match &ring.rebalance {
        Some(_) => "moving",
        None if !ring.known_everywhere || foreign_partitions > 0 => "settling",
        None => "idle",
    };
    let rebalance = ring.rebalance.as_ref();
    Ok(RebalanceStatus {
        ring_epoch: ring.epoch,
        phase: phase.to_owned(),
        known_everywhere: ring.known_everywhere,
        moving_partitions: rebalance.map_or(0, |r| r.moving),
        filled_partitions: rebalance.map_or(0, |r| r.filled.len() as u32),
        moved_replicas: rebalance.map_or(0, |r| r.moved_replicas),
        moved_bytes,
        foreign_partitions,
        started_unix_ms: rebalance.map_or(0, |r| r.started_unix_ms),
        suspended: rebalance.is_some_and(|r| r.suspended),
        nodes_behind,
        recovering_node: rebalance.and_then(|r| r.recovering_node),
    })
}

fn recovery_status(manager: &Manager) -> Result<RecoveryStatus, Failure> {
    let state = manager.snapshot();
    let ring = state.ring.as_ref().ok_or_else(not_started)?;
    let moved_bytes = state
        .nodes
        .keys()
        .filter_map(|id| manager.liveness().last(*id))
        .flat_map(|(_, beat)| beat.shards)
        .map(|s| s.rebalance_moved_bytes)
        .sum();
    let (phase, recovery) = match (&ring.recovery, &ring.last_recovery) {
        (Some(under_way), _) => ("recovering", Some(under_way)),
        (None, last) => ("idle", last.as_ref()),
    };
    Ok(RecoveryStatus {
        phase: phase.to_owned(),
        node: recovery.map(|r| r.node),
        partitions: recovery.map_or(0, |r| r.partitions),
        done: recovery.map_or(0, |r| r.done.len() as u32),
        requested_unix_ms: recovery.map_or(0, |r| r.requested_unix_ms),
        finished_unix_ms: recovery.map_or(0, |r| r.finished_unix_ms),
        moved_bytes,
    })
}

fn ring_summary(ring: &RingRecord) -> RingSummary {
    RingSummary {
        epoch: ring.epoch,
        checksum: ring.checksum(),
        partitions: ring.partitions,
        replicas: ring.replicas,
        partitions_by_node: ring.partitions_by_node(),
    }
}

fn node_infos(manager: &Manager, state: &ManagerState) -> Vec<NodeInfo> {
    let by_node = state
        .ring
        .as_ref()
        .map(RingRecord::partitions_by_node)
        .unwrap_or_default();
    state
        .nodes
        .values()
        .map(|member| {
            let last = manager.liveness().last(member.id);
            let bound_ms = state.settings.max_clock_offset_ms;
            let clock_beyond_bound = last.as_ref().is_some_and(|(_, beat)| {
                beat.clock_offset_us
                    .is_some_and(|o| !crate::cluster::clock_within_bound(o, bound_ms))
            });
            NodeInfo {
                member: member.clone(),
                partitions: by_node.get(&member.id).copied().unwrap_or(0),
                heartbeat_age_ms: last
                    .as_ref()
                    .map(|(age, _)| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                heartbeat: last.map(|(_, beat)| beat),
                clock_beyond_bound,
            }
        })
        .collect()
}

fn node_info(manager: &Manager, id: u32) -> Result<NodeInfo, Failure> {
    let state = manager.snapshot();
    node_infos(manager, &state)
        .into_iter()
        .find(|info| info.member.id == id)
        .ok_or_else(|| ManagerError::NoSuchNode(id).into())
}

fn cluster_status(manager: &Manager) -> ClusterStatus {
    let state = manager.snapshot();
    ClusterStatus {
        cluster_id: state.cluster_id.clone(),
        ring_epoch: state.ring.as_ref().map_or(0, |ring| ring.epoch),
        ring_checksum: state.ring_checksum().unwrap_or(0),
        partitions: state.ring.as_ref().map_or(0, |ring| ring.partitions),
        settings: state.settings.clone(),
        nodes: node_infos(manager, &state),
    }
}

fn not_found(path: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no admin endpoint at {path}"),
    )
}

/// Requires `Authorization: Bearer <token>`, compared without leaking the match length by timing.
fn authorize(context: &AdminContext, request: &Request<Incoming>) -> Result<(), Failure> {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(given, &context.expected_authorization) {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong admin token (Authorization: Bearer <token from <data-dir>/manager/admin.token>)",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn list_users(state: &ManagerState) -> Vec<UserInfo> {
    state
        .users
        .values()
        .map(|user| UserInfo {
            user_id: user.id.clone(),
            is_admin: user.is_admin,
            access_key_ids: state
                .keys_of(&user.id)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            created_unix_ms: user.created_unix_ms,
        })
        .collect()
}

fn delete_user(context: &AdminContext, user_id: &str) -> Reply {
    let snapshot = context.manager.snapshot();
    let user = snapshot
        .user(user_id)
        .ok_or_else(|| ManagerError::NoSuchUser(user_id.to_owned()))?;
    if user.is_admin {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "CannotDeleteAdmin",
            format!("user {user_id} is an administrator and cannot be deleted"),
        ));
    }
    context.manager.delete_user(user_id)?;
    json_ok(&Deleted {
        deleted: user_id.to_owned(),
    })
}

fn add_bucket(context: &AdminContext, body: AddBucketRequest) -> Reply {
    let acl = match body.acl.as_deref() {
        Some(text) => parse_acl(text)?,
        None => BucketAcl::Private,
    };
    let owner = owner_of_key(&context.manager.snapshot(), &body.access_key_id)?;
    let bucket = context.manager.create_bucket(&body.bucket, &owner, acl)?;
    Ok(json_response(StatusCode::CREATED, &bucket))
}

fn delete_bucket(context: &AdminContext, name: &str) -> Reply {
    let Some(bucket) = context.manager.snapshot().bucket(name).cloned() else {
        return Err(ManagerError::NoSuchBucket(name.to_owned()).into());
    };
    // A bucket already marked (a deletion cut off between its phases) goes straight to the
    // manager's check, which finishes the deletion or takes the mark away.
    let checked = if bucket.deleting {
        Some(true)
    } else {
        context.status.bucket_is_empty(&bucket)
    };
    match checked {
        Some(true) => {}
        Some(false) => {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "BucketNotEmpty",
                format!("bucket {name} is not empty; delete its objects first"),
            ));
        }
        None => {
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "EmptinessUnknown",
                format!(
                    "this node cannot check that bucket {name} is empty; refusing to delete it"
                ),
            ));
        }
    }
    // Two phases where the node gave its emptiness check (see Manager::delete_bucket); only the
    // incarnation checked above: a bucket created again meanwhile stays.
    context.manager.delete_bucket(name, bucket.incarnation)?;
    json_ok(&Deleted {
        deleted: name.to_owned(),
    })
}

fn update_acl(context: &AdminContext, name: &str, body: UpdateAclRequest) -> Reply {
    let acl = parse_acl(&body.acl)?;
    let snapshot = context.manager.snapshot();
    let bucket = snapshot
        .bucket(name)
        .ok_or_else(|| ManagerError::NoSuchBucket(name.to_owned()))?;
    let caller = owner_of_key(&snapshot, &body.access_key_id)?;
    let caller_is_admin = snapshot.user(&caller).is_some_and(|user| user.is_admin);
    if bucket.owner != caller && !caller_is_admin {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "access key {} does not own bucket {name}",
                body.access_key_id
            ),
        ));
    }
    context.manager.set_bucket_acl(name, acl)?;
    let updated = context.manager.snapshot();
    let bucket = updated
        .bucket(name)
        .ok_or_else(|| ManagerError::NoSuchBucket(name.to_owned()))?;
    json_ok(bucket)
}

fn owner_of_key(state: &ManagerState, access_key_id: &str) -> Result<String, Failure> {
    state
        .access_key(access_key_id)
        .map(|key| key.user_id.clone())
        .ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                "NoSuchAccessKey",
                format!("no such access key {access_key_id}"),
            )
        })
}

fn parse_acl(text: &str) -> Result<BucketAcl, Failure> {
    BucketAcl::parse(text).ok_or_else(|| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidAcl",
            format!("invalid ACL {text:?}: expected private, public-read or public-read-write"),
        )
    })
}

async fn read_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, Failure> {
    let body = Limited::new(request.into_body(), MAX_ADMIN_BODY_BYTES)
        .collect()
        .await
        .map_err(|err| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "InvalidBody",
                format!(
                    "cannot read the request body (at most {MAX_ADMIN_BODY_BYTES} bytes): {err}"
                ),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|err| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidJson",
            format!("invalid request body: {err}"),
        )
    })
}

fn json_ok<T: Serialize + ?Sized>(value: &T) -> Reply {
    Ok(json_response(StatusCode::OK, value))
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(err) => {
            tracing::error!(%err, "admin API cannot encode its answer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"InternalError","message":"cannot encode the answer"}"#.to_vec(),
            )
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
