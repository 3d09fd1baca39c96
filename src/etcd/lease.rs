//! Leases: keys that disappear when their holder stops renewing them (for
//! one-at-a-time duties, and a replica's presence).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::pb::etcdserverpb as pb;
use super::{EtcdClient, EtcdError, Result, request};

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds etcd granted (it may grant more than asked, never less than
    /// its minimum: 1.5 × the election timeout).
    pub ttl: i64,
}

/// An open keep-alive stream for one lease.
pub struct LeaseKeepAlive {
    id: i64,
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
    timeout: Duration,
}

impl std::fmt::Debug for LeaseKeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeepAlive").field("id", &self.id).finish()
    }
}

impl EtcdClient {
    /// Grants a lease of `ttl_secs` seconds.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<Lease> {
        let req = pb::LeaseGrantRequest { ttl: ttl_secs, id: 0 };
        let r = self
            .call(false, self.inner.request_timeout, |ch, t| async move {
                pb::lease_client::LeaseClient::new(ch)
                    .lease_grant(request(req, t))
                    .await
            })
            .await?;
        if !r.error.is_empty() {
            return Err(EtcdError::Other {
                code: tonic::Code::Unknown,
                message: r.error,
            });
        }
        Ok(Lease { id: r.id, ttl: r.ttl })
    }

    /// Revokes a lease: its keys are deleted, in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        let req = pb::LeaseRevokeRequest { id };
        self.call(false, self.inner.request_timeout, |ch, t| async move {
            pb::lease_client::LeaseClient::new(ch)
                .lease_revoke(request(req, t))
                .await
        })
        .await?;
        Ok(())
    }

    /// Opens a keep-alive stream for lease `id` and renews it once (etcd
    /// answers nothing on the stream before a first renewal); renew again
    /// with [`LeaseKeepAlive::keep_alive`] well within its TTL. A lease
    /// that has expired or was revoked: [`EtcdError::Other`] `NotFound`.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAlive> {
        let timeout = self.inner.request_timeout;
        let (requests, responses, ttl) = self
            .call(true, timeout, |ch, _| async move {
                let (tx, rx) = mpsc::channel(4);
                tx.send(pb::LeaseKeepAliveRequest { id })
                    .await
                    .map_err(|_| tonic::Status::unavailable("keep-alive request dropped"))?;
                let mut responses = pb::lease_client::LeaseClient::new(ch)
                    .lease_keep_alive(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let first = responses
                    .message()
                    .await?
                    .ok_or_else(|| tonic::Status::unavailable("the keep-alive stream ended"))?;
                Ok(tonic::Response::new((tx, responses, first.ttl)))
            })
            .await?;
        if ttl <= 0 {
            return Err(EtcdError::Other {
                code: tonic::Code::NotFound,
                message: format!("lease {id:x} has expired or was revoked"),
            });
        }
        Ok(LeaseKeepAlive {
            id,
            requests,
            responses,
            timeout,
        })
    }
}

impl LeaseKeepAlive {
    /// Renews the lease; answers the seconds it has left, 0 when it has
    /// expired or was revoked (renewing it again cannot bring it back).
    pub async fn keep_alive(&mut self) -> Result<i64> {
        let closed = || EtcdError::Unavailable("the lease keep-alive stream is closed".into());
        self.requests
            .send(pb::LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| closed())?;
        match tokio::time::timeout(self.timeout, self.responses.message()).await {
            Ok(Ok(Some(r))) => Ok(r.ttl),
            Ok(Ok(None)) => Err(closed()),
            Ok(Err(status)) => Err(EtcdError::from_status(&status)),
            Err(_) => Err(EtcdError::Unavailable("no keep-alive answer in time".into())),
        }
    }

    pub fn id(&self) -> i64 {
        self.id
    }
}
