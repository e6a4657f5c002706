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

    // Encoded by protox itself: a prost_types round trip would drop the extension options
    // (`google.api.http`) that the front door and the OpenAPI document are built from.
    let descriptors = protox::Compiler::new(["."])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?
        .encode_file_descriptor_set();
    std::fs::write(&descriptor_path, descriptors)?;

    tonic_prost_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["."])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
