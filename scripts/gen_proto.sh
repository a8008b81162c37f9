#!/usr/bin/env bash
# Regenerates Sources/PTLCluster/Generated/ptl.pb.swift from Proto/ptl.proto (run by hand when the
# schema changes; the output is committed so builds never need protoc or the plugin).
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-swift, built here from swift-protobuf
# 1.39.0 (the version Package.swift depends on) into .build-protoc/; protobuf-compiler is not
# installed by scripts/setup.sh (only this script needs it): apt-get install protobuf-compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN=.build-protoc/swift-protobuf/.build/debug/protoc-gen-swift
if [ ! -x "$PLUGIN" ]; then
    mkdir -p .build-protoc
    [ -d .build-protoc/swift-protobuf ] || git clone -q --branch 1.39.0 --depth 1 https://github.com/apple/swift-protobuf .build-protoc/swift-protobuf
    (cd .build-protoc/swift-protobuf && swift build --product protoc-gen-swift)   # debug: builds in a fraction of the time, writes the same code
fi
mkdir -p Sources/PTLCluster/Generated
protoc --proto_path=Proto --plugin=protoc-gen-swift="$PLUGIN" \
    --swift_opt=Visibility=Public --swift_out=Sources/PTLCluster/Generated Proto/ptl.proto
echo "wrote Sources/PTLCluster/Generated/ptl.pb.swift"
