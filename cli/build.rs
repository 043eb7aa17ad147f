fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=protos");
    println!("cargo:rerun-if-changed=protos-std");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    zrpc_build::configure()
        .file_descriptor_set_path(out.join("descriptors.bin"))
        .compile(
            &[
                "protos/people.proto",
                "protos/echo.proto",
                "protos-std/grpc/health/v1/health.proto",
            ],
            &["protos", "protos-std"],
        )?;
    // gRPC's interop service, in a descriptor set of its own: reflection
    // lists it only when `zrpc serve --interop` serves it.
    zrpc_build::configure()
        .file_descriptor_set_path(out.join("interop_descriptors.bin"))
        .compile(&["protos-std/grpc/testing/test.proto"], &["protos-std"])
}
