//! Per-core service setup: builds the s3s service (SigV4 auth backed by the manager, bucket ACL
//! access checks, virtual-host parsing for the configured domain, the manager's bucket-name
//! rules) around [`S3Gateway`](crate::s3::S3Gateway), puts the fast path for plain
//! requests ([`FastPath`]) in front of it and serves it, plus the optional REST API,
//! with `leofs_shard::serve_http` on the current core.

use std::net::SocketAddr;
use std::sync::Arc;

use leofs_manager::{CatalogWriter, Manager};
use leofs_shard::{OverloadAnswer, Shard};
use s3s::service::S3ServiceBuilder;

use crate::GatewayConfig;
use crate::auth::{AclAccess, DomainHost, ManagerAuth, ManagerNameValidation};
use crate::error::GatewayError;
use crate::fast_path::FastPath;
use crate::metered::Metered;
use crate::rest::RestService;
use crate::s3::S3Gateway;
use crate::store::Ctx;

/// The S3 listener's answer to a connection over the node's connection cap: S3's `SlowDown`.
const S3_OVERLOAD: OverloadAnswer = OverloadAnswer {
    content_type: "application/xml",
    body: "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
           <Message>Please reduce your request rate.</Message></Error>",
};

/// The REST listener's answer to a connection over the cap: its error format (the code as text).
const REST_OVERLOAD: OverloadAnswer = OverloadAnswer {
    content_type: "text/plain",
    body: "SlowDown",
};

/// How often a core hands its disk cache's entries whose write delay is over to the writer.
const DISK_CACHE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// On the current core: serve S3 on `s3_addr` and, if given, the LeoFS REST API on `rest_addr`
/// (both via `leofs_shard::serve_http`). Called from the `init_core` closure of `start_node`,
/// i.e. on the core's own thread, which the services never leave.
pub fn serve_core(
    shard: Shard,
    manager: Arc<Manager>,
    catalog: CatalogWriter,
    config: Arc<GatewayConfig>,
    s3_addr: SocketAddr,
    rest_addr: Option<SocketAddr>,
) -> Result<(), GatewayError> {
    if let Some(log) = &config.access_log {
        log.start().map_err(GatewayError::AccessLog)?;
    }
    let ctx = Ctx::new(
        shard.clone(),
        manager.clone(),
        catalog.clone(),
        config.clone(),
    );
    let mut builder = S3ServiceBuilder::new(S3Gateway::new(ctx.clone()));
    builder.set_auth(ManagerAuth::new(manager.clone(), catalog.clone()));
    builder.set_access(AclAccess::new(manager.clone(), catalog));
    builder.set_validation(ManagerNameValidation);
    if let Some(domain) = config
        .virtual_host_domain
        .as_deref()
        .filter(|d| !d.is_empty())
    {
        builder.set_host(DomainHost::new(domain));
    }
    let domain = config.virtual_host_domain.clone().filter(|d| !d.is_empty());
    let service = Metered::new(
        FastPath::new(builder.build(), ctx.clone()),
        shard.clone(),
        domain,
    )
    .with_access_log(config.access_log.clone(), manager.clone());
    leofs_shard::serve_http(&shard, s3_addr, service, S3_OVERLOAD)?;
    if ctx.storage.has_disk_cache() {
        let (storage, shard) = (ctx.storage.clone(), shard.clone());
        monoio::spawn(async move {
            while !shard.is_stopping() {
                monoio::time::sleep(DISK_CACHE_TICK).await;
                storage.write_due_disk_entries();
            }
        });
    }
    if let Some(addr) = rest_addr {
        let service = Metered::rest(RestService::new(ctx), shard.clone())
            .with_access_log(config.access_log.clone(), manager);
        leofs_shard::serve_http(&shard, addr, service, REST_OVERLOAD)?;
    }
    Ok(())
}
