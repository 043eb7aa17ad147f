#!/usr/bin/env bash
# Installs the Python packages the interop tests use into target/pydeps
# (project-local; nothing is installed system-wide). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d target/pydeps/websockets ] || [ ! -d target/pydeps/google/protobuf ] \
  || [ ! -d target/pydeps/grpc ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target target/pydeps "websockets>=13,<16" "protobuf>=5,<7" "grpcio==1.85.1"
fi
