#!/usr/bin/env bash
# Regenerate the protobuf and gRPC modules in src/permitd/v1/ from the repo's proto/.
#
#   scripts/gen.sh            rewrite src/permitd/v1/ in place
#   scripts/gen.sh OUT_DIR    write OUT_DIR/permitd/v1/ instead (the freshness test diffs it)
#
# Uses $PYTHON (default python3) when it has grpcio-tools at the pinned version; otherwise
# creates a throwaway venv with it. The pinned grpcio-tools decides the minimum grpcio and
# protobuf the generated code needs: keep it in step with pyproject.toml's dependencies.
set -euo pipefail
GRPCIO_TOOLS_VERSION=1.80.1

here="$(cd "$(dirname "$0")/.." && pwd)"
proto_root="$(cd "$here/../../proto" && pwd)"
out="${1:-$here/src}"
py="${PYTHON:-python3}"

have="$("$py" -c 'import grpc_tools, importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$GRPCIO_TOOLS_VERSION" ]; then
  venv="${TMPDIR:-/tmp}/permitd-gen-venv-$GRPCIO_TOOLS_VERSION"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  fi
  py="$venv/bin/python"
fi

mkdir -p "$out/permitd/v1"
rm -f "$out"/permitd/v1/*_pb2.py "$out"/permitd/v1/*_pb2.pyi "$out"/permitd/v1/*_pb2_grpc.py
(cd "$proto_root" && "$py" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  permitd/v1/*.proto)
cat > "$out/permitd/v1/__init__.py" <<'PY'
"""Generated protobuf and gRPC modules for permitd.v1 (scripts/gen.sh; do not edit)."""
PY
