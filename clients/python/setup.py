"""Builds engram-client: the modules of proto/ are generated into the build
dir here (gen_protos.py), never into the source tree."""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_protos  # noqa: E402


class BuildWithProtos(build_py):
    def run(self):
        proto_dir = os.environ.get("ENGRAM_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")
        if not os.path.isdir(proto_dir):
            raise SystemExit("engram-client: proto dir %s not found (build from the Engram "
                             "repository, or set ENGRAM_PROTO_DIR)" % proto_dir)
        gen_protos.generate(os.path.abspath(proto_dir), os.path.abspath(self.build_lib))
        super().run()

    def find_package_modules(self, package, package_dir):
        # engram.v1 and engram._ext exist only in build_lib (generated above).
        if package in ("engram.v1", "engram._ext"):
            return []
        return super().find_package_modules(package, package_dir)


setup(cmdclass={"build_py": BuildWithProtos})
