#!/bin/sh
# Builds the two FROM scratch images the deployments use, from static
# binaries built here (no base image is pulled):
#   cilium-tracer/tracer:$TAG         the tracer (examples/deploy/Dockerfile)
#   cilium-tracer/example-agent:$TAG  the stand-in cilium-agent (examples/agent/Dockerfile)
set -eu
TAG=${TAG:-dev}
GO=${GO:-go}
root=$(cd "$(dirname "$0")/../.." && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

mkdir "$ctx/tracer" "$ctx/agent"
(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath -o "$ctx/tracer/tracer" ./cmd/tracer)
(cd "$root/examples/agent" && CGO_ENABLED=0 "$GO" build -trimpath -o "$ctx/agent/cilium-agent" ./daemon)
cp "$root/examples/deploy/Dockerfile" "$ctx/tracer/Dockerfile"
cp "$root/examples/agent/Dockerfile" "$ctx/agent/Dockerfile"

docker build -q -t "cilium-tracer/tracer:$TAG" "$ctx/tracer"
docker build -q -t "cilium-tracer/example-agent:$TAG" "$ctx/agent"
