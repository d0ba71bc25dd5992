"""make install and make package (issue 14): the build installed into a
DESTDIR, a C program built against it with pkg-config and with CMake's
find_package(Engram), and the Debian package of the server checked with
dpkg-deb. ENGRAM_BUILD_DIR is the configured and built tree."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

BUILD = os.path.abspath(os.environ.get("ENGRAM_BUILD_DIR", "build"))

PROGRAM = r"""
#include <stdio.h>
#include <engram.h>
#include <google/rpc/status.pb-c.h>

int main(void) {
  eg_client *c = eg_client_new("127.0.0.1:1", NULL);
  Engram__V1__GetSessionRequest req = ENGRAM__V1__GET_SESSION_REQUEST__INIT;
  req.session_id = "s";
  eg_client_opts opts = {.timeout_ms = 2000};
  eg_client_status st;
  Engram__V1__Session *s = NULL;
  int code = eg_client_get_session(c, &req, &opts, &st, &s);
  printf("%s %s\n", eg_client_code_name(code), google__rpc__status__descriptor.name);
  eg_client_free(c);
  return 0;
}
"""

CMAKE_PROJECT = """cmake_minimum_required(VERSION 3.18)
project(hello C)
find_package(Engram 0.14 REQUIRED)
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE Engram::engram)
"""


def cache(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        m = re.search(r"^%s:[A-Z]+=(.*)$" % re.escape(name), f.read(), re.M)
    return m.group(1) if m else ""


def sh(*args, env=None, cwd=None, timeout=120):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                       timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(args), p.returncode, p.stdout.decode()))
    return p.stdout.decode()


class InstallTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-install-")
        cls.root = os.path.join(cls.tmp, "root")
        env = dict(os.environ, DESTDIR=cls.root)
        sh("cmake", "--install", BUILD, env=env)
        cls.prefix = cls.root + cache("CMAKE_INSTALL_PREFIX")
        # An ASan build's library needs its runtime in the program too.
        cls.cflags = ["-fsanitize=address,undefined"] if cache("ENGRAM_SANITIZE") == "ON" else []

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def libdir(self):
        return os.path.dirname(self.find("libengram.so"))

    def find(self, name):
        for d, _, files in os.walk(self.prefix):
            if name in files:
                return os.path.join(d, name)
        self.fail("%s not installed under %s" % (name, self.prefix))

    def run_program(self, exe):
        env = dict(os.environ, LD_LIBRARY_PATH=self.libdir(), ASAN_OPTIONS="detect_leaks=0")
        out = sh(exe, env=env)
        self.assertEqual(out, "UNAVAILABLE google.rpc.Status\n")

    def test_files(self):
        for name in ("engramd", "engram", "libengram.a", "libengram.so", "engram.h",
                     "session.pb-c.h", "status.pb-c.h", "engram.pc", "EngramConfig.cmake",
                     "EngramConfigVersion.cmake", "_engram", "README.md"):
            self.find(name)
        comp = os.path.join(self.prefix, "share", "bash-completion", "completions", "engram")
        with open(comp) as f:
            self.assertIn("complete -F _engram engram", f.read())

    def test_pkg_config(self):
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(self.find("engram.pc")),
                   PKG_CONFIG_SYSROOT_DIR=self.root)
        self.assertEqual(sh("pkg-config", "--modversion", "engram", env=env).strip(), "0.14.0")
        flags = sh("pkg-config", "--cflags", "--libs", "engram", env=env).split()
        src = os.path.join(self.tmp, "hello.c")
        with open(src, "w") as f:
            f.write(PROGRAM)
        exe = os.path.join(self.tmp, "hello-pc")
        sh("cc", "-o", exe, src, *self.cflags, *flags)
        self.run_program(exe)

    def test_cmake_find_package(self):
        proj = os.path.join(self.tmp, "proj")
        os.makedirs(proj)
        with open(os.path.join(proj, "CMakeLists.txt"), "w") as f:
            f.write(CMAKE_PROJECT)
        with open(os.path.join(proj, "hello.c"), "w") as f:
            f.write(PROGRAM)
        b = os.path.join(proj, "build")
        sh("cmake", "-S", proj, "-B", b, "-DCMAKE_PREFIX_PATH=" + self.prefix,
           "-DCMAKE_C_FLAGS=" + " ".join(self.cflags))
        sh("cmake", "--build", b)
        self.run_program(os.path.join(b, "hello"))

    def test_deb(self):
        out = os.path.join(self.tmp, "pkg")
        sh("cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"), "-B", out,
           timeout=300)
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        self.assertEqual(len(debs), 1, os.listdir(out))
        deb = os.path.join(out, debs[0])
        info = sh("dpkg-deb", "-I", deb)
        self.assertRegex(info, r"(?m)^ Package: engram$")
        self.assertRegex(info, r"(?m)^ Version: 0\.14\.0$")
        depends = re.search(r"(?m)^ Depends: (.*)$", info).group(1)
        for lib in ("libgrpc", "libprotobuf-c", "libsodium", "liblmdb", "libmicrohttpd", "libjson-c"):
            self.assertIn(lib, depends)
        files = sh("dpkg-deb", "-c", deb)
        for path in ("./usr/bin/engramd", "./usr/bin/engram",
                     "./usr/share/bash-completion/completions/engram",
                     "./usr/share/zsh/vendor-completions/_engram",
                     "./usr/share/doc/engram/README.md"):
            self.assertIn(path, files)
        self.assertNotIn("libengram", files)  # the C client is the dev install's


if __name__ == "__main__":
    unittest.main()
