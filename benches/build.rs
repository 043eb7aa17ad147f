//! With the `peers` feature, generates the tonic peer's client and server
//! (service `bench.Echo`, methods `Unary` and `Stream`) over a raw-bytes
//! codec, so tonic carries exactly the payload bytes the other systems do.

fn main() {
    #[cfg(feature = "peers")]
    {
        use tonic_build::manual::{Builder, Method, Service};
        let method = |name: &str, route: &str| {
            Method::builder()
                .name(name)
                .route_name(route)
                .input_type("::bytes::Bytes")
                .output_type("::bytes::Bytes")
                .codec_path("crate::tonic_peer::RawCodec")
        };
        let service = Service::builder()
            .name("Echo")
            .package("bench")
            .method(method("unary", "Unary").build())
            .method(method("stream", "Stream").server_streaming().build())
            .build();
        Builder::new().compile(&[service]);
    }
    println!("cargo::rerun-if-changed=build.rs");
}
