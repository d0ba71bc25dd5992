#!/usr/bin/env python3
"""Generates the SDK's protobuf and gRPC modules from the repository's proto/
dir (never committed). setup.py runs it while building the package; CMake's
python_sdk_stubs target runs it into the build dir for the tests.

    gen_protos.py --proto-dir ../../proto --out DIR

writes DIR/engram/v1/*_pb2{,_grpc}.py(+.pyi) (proto package engram.v1 maps
onto the SDK's own `engram` package) and DIR/engram/_ext/ with private copies
of google/rpc/{status,error_details} and grpc_health/v1/health. Those three
are renamed into engram._ext (status_pb2, error_details_pb2, health_pb2) so
they never shadow googleapis-common-protos' google.rpc or
grpcio-health-checking's grpc_health; the SDK uses the installed ones when
they import (engram/_pb.py).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

# proto/<path> -> module name under engram/_ext
EXT = {
    "google/rpc/status.proto": "status_pb2",
    "google/rpc/error_details.proto": "error_details_pb2",
    "grpc_health/v1/health.proto": "health_pb2",
}


def _tool(env, name):
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise SystemExit("gen_protos: %s not found (Debian: protobuf-compiler, "
                         "protobuf-compiler-grpc), or set %s" % (name, env))
    return path


def generate(proto_dir, out):
    """Writes the modules under out (created if missing)."""
    protoc = _tool("PROTOC", "protoc")
    plugin = _tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin")
    v1 = os.path.join(proto_dir, "engram", "v1")
    api = sorted("engram/v1/" + f for f in os.listdir(v1) if f.endswith(".proto"))
    if not api:
        raise SystemExit("gen_protos: no .proto files in %s" % v1)
    pkg = os.path.join(out, "engram")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([protoc, "-I", proto_dir, "--python_out=" + tmp, "--pyi_out=" + tmp,
                        "--grpc_out=" + tmp, "--plugin=protoc-gen-grpc=" + plugin] + api,
                       check=True)
        subprocess.run([protoc, "-I", proto_dir, "--python_out=" + tmp, "--pyi_out=" + tmp]
                       + sorted(EXT), check=True)
        dst_v1 = os.path.join(pkg, "v1")
        os.makedirs(dst_v1, exist_ok=True)
        for f in os.listdir(os.path.join(tmp, "engram", "v1")):
            shutil.copy(os.path.join(tmp, "engram", "v1", f), os.path.join(dst_v1, f))
            if f.endswith("_pb2.py"):
                _ext_fallback(os.path.join(dst_v1, f))
        _touch(os.path.join(dst_v1, "__init__.py"))
        dst_ext = os.path.join(pkg, "_ext")
        os.makedirs(dst_ext, exist_ok=True)
        for proto, mod in EXT.items():
            base = os.path.join(tmp, proto[:-len(".proto")] + "_pb2")
            shutil.copy(base + ".py", os.path.join(dst_ext, mod + ".py"))
            shutil.copy(base + ".pyi", os.path.join(dst_ext, mod + ".pyi"))
        _touch(os.path.join(dst_ext, "__init__.py"))


def _ext_fallback(path):
    """An engram.v1 module importing google.rpc (memory.proto's
    google.rpc.Status) takes it from googleapis-common-protos when that is
    installed, else from engram._ext, as engram/_pb.py does."""
    with open(path) as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        m = re.match(r"^from google\.rpc import (\w+)_pb2 as (\w+)$", line)
        proto = m and "google/rpc/%s.proto" % m.group(1)
        if proto in EXT:
            out += ["try:", "    " + line, "except ImportError:",
                    "    from engram._ext import %s as %s" % (EXT[proto], m.group(2))]
        else:
            out.append(line)
    with open(path, "w") as f:
        f.write("\n".join(out))


def _touch(path):
    if not os.path.exists(path):
        with open(path, "w"):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--proto-dir", default=os.path.join(here, "..", "..", "proto"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    generate(os.path.abspath(a.proto_dir), os.path.abspath(a.out))


if __name__ == "__main__":
    sys.exit(main())
