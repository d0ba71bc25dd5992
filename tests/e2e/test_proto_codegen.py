"""Every proto under proto/ generates with protoc --python_out and
--grpc_out as a user would (-I proto, nothing else), and every generated
module imports in a fresh /usr/bin/python3 with only that output dir added
to the installed packages (grpcio, protobuf). A proto whose directory makes
a package named like an installed one (grpc/, google/protobuf/) fails here:
generated grpc/health/v1 hid under grpcio's `grpc`."""
import os
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(REPO, "proto")
PLUGIN = "/usr/bin/grpc_python_plugin"

# Each module must be the generated file itself: grpcio aliases
# grpc.health and grpc.reflection to grpc_health and grpc_reflection when
# those import, so a shadowed grpc/health/v1/health_pb2 may still "import"
# (as another file).
IMPORT_ALL = r"""
import importlib, os, sys
import grpc
grpc_file = grpc.__file__
out = os.getcwd()
for name in sys.argv[1:]:
    m = importlib.import_module(name)
    want = os.path.join(out, *name.split(".")) + ".py"
    assert os.path.realpath(m.__file__) == os.path.realpath(want), (name, m.__file__)
# Still grpcio's own package after every generated module came in.
import grpc as again
assert again.__file__ == grpc_file and hasattr(again, "insecure_channel"), again.__file__
print("imported %d modules" % (len(sys.argv) - 1))
"""


def protos():
    return sorted(os.path.relpath(os.path.join(root, f), PROTO)
                  for root, _, names in os.walk(PROTO) for f in names if f.endswith(".proto"))


class ProtoCodegenTest(unittest.TestCase):
    def test_every_proto_generates_and_imports_in_python(self):
        files = protos()
        self.assertIn("grpc_reflection/v1/reflection.proto", files)
        with tempfile.TemporaryDirectory(prefix="engram-codegen-") as out:
            subprocess.run(["protoc", "-I", PROTO, "--python_out=" + out, "--grpc_out=" + out,
                            "--plugin=protoc-gen-grpc=" + PLUGIN] + files,
                           check=True, timeout=120, cwd=out)
            modules = []
            for f in files:
                base = f[:-len(".proto")].replace("/", ".")
                modules += [base + "_pb2", base + "_pb2_grpc"]
            for m in modules:
                self.assertTrue(os.path.isfile(os.path.join(out, *m.split(".")) + ".py"), m)
            # A fresh interpreter, the output dir first on its path (as a
            # user's project has its generated code), no PYTHONPATH of ours.
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
            env["PYTHONPATH"] = out
            r = subprocess.run(["/usr/bin/python3", "-c", IMPORT_ALL] + modules, env=env,
                               cwd=out, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("imported %d modules" % len(modules), r.stdout)


if __name__ == "__main__":
    unittest.main()
