//! Compiles the `.proto` contracts with protox (pure Rust: no system `protoc`) and generates
//! the tonic clients and servers. Also writes the encoded file descriptor set, which the
//! servers publish through gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "appstack/auth/v1/auth.proto",
    "appstack/main/v1/requests.proto",
    "appstack/worker/v1/worker_admin.proto",
    "appstack/external/v1/processor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let descriptor_path = out_dir.join("appstack_descriptor.bin");

    let descriptors = protox::compile(PROTOS, ["."])?;
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["."])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
