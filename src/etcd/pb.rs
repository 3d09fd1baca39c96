//! The code generated from etcd's protos (`proto/etcd`, compiled by
//! `build.rs`): clients of KV, Watch, Lease, Cluster and Maintenance, and
//! their messages, as etcd names them.

#![allow(clippy::all, missing_docs, rustdoc::all)]

/// Keys and values as etcd stores them, and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's users, roles and permissions (referenced by `etcdserverpb`).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The services and their requests and responses.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
