"""The Envoy-facing edge: ext_authz over HTTP and gRPC, sharing one decision core."""
