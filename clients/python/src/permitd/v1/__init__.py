"""Generated protobuf and gRPC modules for permitd.v1 (scripts/gen.sh; do not edit)."""
