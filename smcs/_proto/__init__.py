"""Generated protobuf and gRPC stubs of proto/smcs/v1/router.proto (regenerate: python -m smcs.proto_gen)."""
