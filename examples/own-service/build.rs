fn main() -> std::io::Result<()> {
    zrpc_build::compile_protos(&["protos/hello.proto"], &["protos"])
}
