"""engramd's log: --log-format json (one JSON object a line with ts, level,
msg), --log-level (warn hides INFO), the start banner (version and the
effective configuration, never a token or key), --version and --help.

The servers here are started by hand: with --log-format json or
--log-level warn there is no text "engramd: listening on" line for the
harness to read, so they listen on a port picked beforehand."""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import grpc

from harness import (ENGRAMD, KEEP, START_TIMEOUT, STOP_TIMEOUT, Client, E2ETestCase,
                     SERVING, Server, clean_env, free_port, make_keyring, scan_sanitizer,
                     uid, write_tokens)

TOKEN, REPLICA_TOKEN = "agent-token-logging-7f3a9c", "replica-token-logging-51be02"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class LoggingTest(E2ETestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-log-")
        if not KEEP:
            self.addCleanup(shutil.rmtree, self.tmp, True)
        self.keyring = make_keyring(os.path.join(self.tmp, "keyring"))
        self.tokens = write_tokens(os.path.join(self.tmp, "tokens"),
                                   [("acme", "agent", TOKEN)])

    def run_engramd(self, *args, tokens=True):
        """Starts engramd with args on a fixed port; returns (proc, addr,
        log path) once Health answers SERVING. Stopped at cleanup."""
        port = free_port()
        data = tempfile.mkdtemp(dir=self.tmp)
        log_path = os.path.join(self.tmp, "engramd-%d.log" % port)
        argv = [ENGRAMD, "--listen", "127.0.0.1:%d" % port, "--data-dir", data,
                "--keyring", self.keyring] + (["--tokens", self.tokens] if tokens else [])
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv + list(args), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=clean_env(),
                                    start_new_session=True)
        self.addCleanup(self.stop, proc, log_path)
        addr = "127.0.0.1:%d" % port
        c = Client(addr)
        self.addCleanup(c.close)
        self.wait_until(lambda: proc.poll() is not None or c.health(timeout=1.0) == SERVING,
                        START_TIMEOUT, "SERVING")
        self.assertIsNone(proc.poll(), self.read(log_path))
        return proc, addr, log_path

    def stop(self, proc, log_path):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        rep = scan_sanitizer(self.read(log_path))
        if rep:
            raise AssertionError("sanitizer report in %s:\n%s" % (log_path, rep))

    @staticmethod
    def read(path):
        with open(path, "r", errors="replace") as f:
            return f.read()

    def stopped_log(self, proc, log_path):
        """The whole log once the server stopped (its drain lines included)."""
        self.stop(proc, log_path)
        self.assertEqual(proc.returncode, 0)
        return self.read(log_path)

    def test_json_lines_parse_and_carry_ts_level_msg(self):
        proc, addr, log_path = self.run_engramd("--log-format", "json")
        c = Client(addr, TOKEN)
        self.addCleanup(c.close)
        c.create(uid("u"))
        lines = self.stopped_log(proc, log_path).splitlines()
        self.assertGreaterEqual(len(lines), 3)
        objs = [json.loads(ln) for ln in lines]
        for o in objs:
            self.assertRegex(o["ts"], TS_RE)
            self.assertIn(o["level"], ("debug", "info", "warn", "error"))
            self.assertIsInstance(o["msg"], str)
            self.assertFalse(o["msg"].startswith("engramd: "), o)
        msgs = [o["msg"] for o in objs]
        self.assertTrue(any(m == "listening on %s" % addr for m in msgs), msgs)
        banner = [o for o in objs if o["msg"].startswith("starting engramd ")]
        self.assertEqual(len(banner), 1, msgs)
        self.assertEqual(banner[0]["version"], "0.16.0")
        self.assertEqual(banner[0]["level"], "info")

    def test_log_level_warn_hides_info(self):
        # No --tokens: the dev-mode warning is the WARN line that must stay.
        proc, _, log_path = self.run_engramd("--log-level", "warn", tokens=False)
        text = self.stopped_log(proc, log_path)
        self.assertRegex(text, r"(?m)^\S+Z WARN engramd: WARNING: no --tokens file")
        for ln in text.splitlines():
            self.assertNotRegex(ln, r"^\S+ (INFO|DEBUG) ", "an INFO line at --log-level warn")
        self.assertNotIn("listening on", text)

    def test_text_lines_have_timestamp_level_and_prefix(self):
        srv = Server()
        self.addCleanup(srv.close)
        srv.start()  # reads the text "engramd: listening on" line
        for ln in srv.log_text().splitlines():
            self.assertRegex(ln, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                                 r"(DEBUG|INFO|WARN|ERROR) engramd: ")

    def test_banner_has_config_and_no_secrets(self):
        proc, addr, log_path = self.run_engramd("--replica-token", REPLICA_TOKEN)
        c = Client(addr, TOKEN)
        self.addCleanup(c.close)
        c.create(uid("u"))
        bad = Client(addr, TOKEN + "-wrong")
        self.addCleanup(bad.close)
        self.assertStatus(grpc.StatusCode.UNAUTHENTICATED, bad.create, uid("u"))
        text = self.stopped_log(proc, log_path)
        banner = [ln for ln in text.splitlines() if "starting engramd 0.16.0 with " in ln]
        self.assertEqual(len(banner), 1, text)
        self.assertIn("tokens=%s" % self.tokens, banner[0])
        self.assertIn("keyring=%s" % self.keyring, banner[0])
        self.assertIn("replica-token=(set)", banner[0])
        self.assertIn("log-level=info", banner[0])
        for secret in (TOKEN, REPLICA_TOKEN):
            self.assertNotIn(secret, text)
        with open(self.keyring) as f:
            keys = [ln.split()[2] for ln in f if ln.startswith("key ")]
        self.assertTrue(keys)
        for k in keys:
            raw = base64.b64decode(k)
            for form in (k, raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
                self.assertNotIn(form, text)

    def test_version_and_help(self):
        p = subprocess.run([ENGRAMD, "--version"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(p.stdout.decode(), "engramd 0.16.0\n")
        p = subprocess.run([ENGRAMD, "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 0)
        out = p.stdout.decode()
        for flag in ("--version", "--log-format", "--log-level"):
            self.assertIn(flag, out)

    def test_bad_log_flags_are_usage_errors(self):
        for args, want in ((["--log-format", "xml"], "--log-format"),
                           (["--log-level", "loud"], "--log-level")):
            p = subprocess.run([ENGRAMD] + args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30, env=clean_env())
            self.assertEqual(p.returncode, 2)
            self.assertIn(want, p.stderr.decode())
