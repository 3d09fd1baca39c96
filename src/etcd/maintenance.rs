//! Members' status, alarms, defragmentation and the member list.

use super::pb::etcdserverpb as pb;
use super::{EtcdClient, Result, request};

/// What one member says about itself (`Maintenance.Status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member that answered.
    pub member_id: u64,
    /// The leader it knows of; 0 when it has none.
    pub leader: u64,
    /// etcd's version, e.g. `3.4.23`.
    pub version: String,
    /// The backend's file size, bytes (what `--quota-backend-bytes` limits).
    pub db_size: i64,
    /// The part of it in use (the rest is reclaimed by defragmenting); 0
    /// from etcd before 3.4.
    pub db_size_in_use: i64,
    pub raft_index: u64,
    pub raft_term: u64,
    /// 0 from etcd before 3.4.
    pub raft_applied_index: u64,
    /// The store's revision on that member.
    pub revision: i64,
    /// Alarms and errors the member reports (e.g. `NOSPACE`).
    pub errors: Vec<String>,
    pub is_learner: bool,
}

impl MemberStatus {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

/// What an alarm is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmKind {
    /// The backend reached `--quota-backend-bytes`: writes are refused.
    NoSpace,
    /// The members' data differ.
    Corrupt,
    Other(i32),
}

/// An alarm raised by a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: AlarmKind,
}

impl Alarm {
    fn to_etcd(self) -> pb::AlarmMember {
        let alarm = match self.kind {
            AlarmKind::NoSpace => pb::AlarmType::Nospace as i32,
            AlarmKind::Corrupt => pb::AlarmType::Corrupt as i32,
            AlarmKind::Other(n) => n,
        };
        pb::AlarmMember {
            member_id: self.member_id,
            alarm,
        }
    }
}

/// A member of the cluster (`Cluster.MemberList`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty for a member added but not started yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl EtcdClient {
    /// The preferred member's status (another's if it is unavailable).
    pub async fn status(&self) -> Result<MemberStatus> {
        let r = self.call(true, self.inner.request_timeout, status_call).await?;
        Ok(member_status(r))
    }

    /// The status of the member at `endpoint` (an index into
    /// [`EtcdClient::endpoints`]), and of no other.
    pub async fn status_of(&self, endpoint: usize) -> Result<MemberStatus> {
        Ok(member_status(
            self.call_on(endpoint, self.inner.request_timeout, &status_call)
                .await?,
        ))
    }

    /// The alarms raised in the cluster.
    pub async fn alarms(&self) -> Result<Vec<Alarm>> {
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: 0,
        };
        let r = self
            .call(true, self.inner.request_timeout, |ch, t| async move {
                pb::maintenance_client::MaintenanceClient::new(ch)
                    .alarm(request(req, t))
                    .await
            })
            .await?;
        Ok(r.alarms
            .into_iter()
            .map(|a| Alarm {
                member_id: a.member_id,
                kind: match pb::AlarmType::try_from(a.alarm) {
                    Ok(pb::AlarmType::Nospace) => AlarmKind::NoSpace,
                    Ok(pb::AlarmType::Corrupt) => AlarmKind::Corrupt,
                    _ => AlarmKind::Other(a.alarm),
                },
            })
            .collect())
    }

    /// Clears an alarm (after compacting and defragmenting, for NOSPACE;
    /// etcd raises it again if the backend is still over its quota).
    pub async fn alarm_disarm(&self, alarm: Alarm) -> Result<()> {
        let a = alarm.to_etcd();
        let req = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id: a.member_id,
            alarm: a.alarm,
        };
        self.call(false, self.inner.request_timeout, |ch, t| async move {
            pb::maintenance_client::MaintenanceClient::new(ch)
                .alarm(request(req, t))
                .await
        })
        .await?;
        Ok(())
    }

    /// Defragments the member at `endpoint` (one member at a time: it
    /// stops serving while it rewrites its backend).
    pub async fn defragment_of(&self, endpoint: usize) -> Result<()> {
        self.call_on(endpoint, self.inner.request_timeout * 12, &|ch, t| async move {
            pb::maintenance_client::MaintenanceClient::new(ch)
                .defragment(request(pb::DefragmentRequest {}, t))
                .await
        })
        .await?;
        Ok(())
    }

    /// The cluster's members.
    pub async fn member_list(&self) -> Result<Vec<Member>> {
        let r = self
            .call(true, self.inner.request_timeout, |ch, t| async move {
                pb::cluster_client::ClusterClient::new(ch)
                    .member_list(request(pb::MemberListRequest { linearizable: true }, t))
                    .await
            })
            .await?;
        Ok(r.members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_ur_ls,
                client_urls: m.client_ur_ls,
                is_learner: m.is_learner,
            })
            .collect())
    }
}

async fn status_call(
    ch: tonic::transport::Channel,
    t: std::time::Duration,
) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
    pb::maintenance_client::MaintenanceClient::new(ch)
        .status(request(pb::StatusRequest {}, t))
        .await
}

fn member_status(r: pb::StatusResponse) -> MemberStatus {
    let header = r.header.unwrap_or_default();
    MemberStatus {
        member_id: header.member_id,
        leader: r.leader,
        version: r.version,
        db_size: r.db_size,
        db_size_in_use: r.db_size_in_use,
        raft_index: r.raft_index,
        raft_term: r.raft_term,
        raft_applied_index: r.raft_applied_index,
        revision: header.revision,
        errors: r.errors,
        is_learner: r.is_learner,
    }
}
