//! Compiles `haven/v1/*.proto` with protox (no system `protoc`) and writes the encoded descriptor set
//! for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["haven/v1/common.proto", "haven/v1/gateway.proto", "haven/v1/audit.proto", "haven/v1/node.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("haven_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().file_descriptor_set_path(&descriptor_path).skip_protoc_run().compile_fds(fds)?;
    Ok(())
}
