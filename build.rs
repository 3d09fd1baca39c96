//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes
//! the descriptor set that server reflection serves; also the clients of
//! etcd's API, from its protos vendored in `proto/etcd` (`src/etcd`, and the
//! load benchmark's etcd rows).

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/factcheck/v1/factcheck.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("factcheck_descriptor.bin"), fds.encode_to_vec())?;
    let descriptors = fds.encode_to_vec();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Decode errors are the caller's: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        // Well-known types with serde, for the canonical JSON mapping.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    // serde for every API message, as the proto3 JSON mapping says
    // (camelCase names, enum value names, RFC 3339 times).
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&out)
        .build(&[".factcheck.v1"])?;
    // etcd's KV, Watch, Lease, Cluster and Maintenance (proto/etcd/README.md):
    // clients only, no protoc. Packages etcdserverpb, mvccpb and authpb;
    // `src/etcd/pb.rs` includes them.
    let etcd = protox::compile(["proto/etcd/api/etcdserverpb/rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
