"""
End-to-end harness: starts the real engramd on a free loopback port with a
temp data dir, talks to it over gRPC with the generated Python stubs, and
checks its log for sanitizer reports after every stop.

Environment (set by ctest; defaults for a local run from the repo):
  ENGRAMD        path of engramd       (default build/engramd)
  ENGRAM_CLI     path of the engram CLI (default build/engram)
  ENGRAM_PY_GEN  dir with the generated python stubs (default: generated
                 with protoc into a temp dir)
  ENGRAM_E2E_KEEP=1  keep temp dirs (data + logs) for inspection
"""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGRAMD = os.environ.get("ENGRAMD") or os.path.join(REPO, "build", "engramd")
ENGRAM_CLI = os.environ.get("ENGRAM_CLI") or os.path.join(REPO, "build", "engram")
KEEP = os.environ.get("ENGRAM_E2E_KEEP") == "1"

RPC_TIMEOUT = 10.0          # deadline of every RPC, seconds
START_TIMEOUT = 20.0        # bound on "listening" line + SERVING
STOP_TIMEOUT = 15.0         # bound on SIGTERM -> exit
# Channel options for a client that stops reading (or reads slowly) to hold
# a server's stream sends back: HTTP/2 windows that stay at the protocol's
# 64 KB. With grpc's default BDP probing a connection's windows grow with
# what its pings measure (to 4.8-9.6 MB estimates after the 2.4 MB uploads
# the export tests make), and a client that had "stopped reading" took in
# a whole 12 MB export within 0.3 s: the server's sends never waited.
FIXED_WINDOWS = (("grpc.http2.bdp_probe", 0),)

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "ThreadSanitizer", "AddressSanitizer:DEADLYSIGNAL",
                     # glibc heap checks (abort with a message on stderr)
                     "double free or corruption", "free(): invalid", "malloc(): ",
                     "corrupted size vs. prev_size", "munmap_chunk(): invalid")
LISTEN_RE = re.compile(r"engramd: listening on 127\.0\.0\.1:(\d+)")
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# ---- generated stubs -----------------------------------------------------

def _py_gen_dir():
    d = os.environ.get("ENGRAM_PY_GEN")
    if d:
        return d
    d = os.path.join(tempfile.gettempdir(), "engram-e2e-pygen-%d" % os.getuid())
    proto = os.path.join(REPO, "proto")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(proto)
                   for f in names if f.endswith(".proto"))
    os.makedirs(d, exist_ok=True)
    subprocess.run(["protoc", "-I", proto, "-I", "/usr/include", "--python_out=" + d,
                    "--grpc_out=" + d,
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin"] + files,
                   check=True, timeout=60)
    return d


PY_GEN = _py_gen_dir()
if PY_GEN not in sys.path:
    sys.path.append(PY_GEN)

from engram.v1 import session_pb2 as pb  # noqa: E402
from engram.v1 import session_pb2_grpc as pbg  # noqa: E402


# proto/grpc_health/v1 (package grpc.health.v1), as grpcio-health-checking
# ships it: a grpc/health/v1 path would be shadowed by the installed `grpc`.
from grpc_health.v1 import health_pb2  # noqa: E402
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ---- small helpers ---------------------------------------------------------

def uid(prefix="t"):
    """A fresh valid id, so tests sharing one server never collide."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:16])


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def write_tokens(path, entries):
    """entries: (tenant, role, token) triples -> lines `tenant role sha256hex`."""
    with open(path, "w") as f:
        f.write("# tenant role sha256-hex-of-token\n")
        for tenant, role, token in entries:
            f.write("%s %s %s\n" % (tenant, role, token_hash(token)))
    os.chmod(path, 0o600)
    return path


def free_port():
    """A loopback port that was free a moment ago, for a server that must
    keep its address across restarts (replicas follow HOST:PORT)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keyring_with(path, *ids):
    """A valid keyring (0600) holding fresh random keys under ids, the
    first of them primary."""
    import base64
    with open(path, "w") as f:
        f.write("primary %d\n" % ids[0])
        for i in ids:
            f.write("key %d %s\n" % (i, base64.b64encode(os.urandom(32)).decode()))
    os.chmod(path, 0o600)
    return path


def make_keyring(path):
    """Writes a keyring with one fresh random key (nodes that replicate
    one another must share it)."""
    return keyring_with(path, 1)


def clean_env():
    """os.environ without ENGRAM_* variables: engramd and the CLI read their
    settings from those, and the caller's shell must not change a test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}


def M(content, role=pb.ROLE_USER, **kw):
    """A Message to append."""
    return pb.Message(role=role, content=content, **kw)


def ts_ns(ts):
    return ts.seconds * 1_000_000_000 + ts.nanos


def wait_past(ts, seconds):
    """Returns once `seconds` have passed since ts, a Timestamp the server
    gave: a time measured from the server's answer (engramd runs on this
    host, so one clock), not a guessed sleep."""
    until = ts_ns(ts) + int(seconds * 1e9)
    while (left := until - time.time_ns()) >= 0:
        time.sleep(min(left / 1e9, 0.1))


def tail(srv, n=2500):
    """The end of a process's log, headed with its name and log path."""
    return "--- %s (%s) ---\n%s" % (getattr(srv, "name", "?"), srv.log_path, srv.log_text()[-n:])


def scan_sanitizer(text):
    """Returns an excerpt around the first sanitizer report, or None."""
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            start = text.rfind("\n", 0, max(0, i - 200)) + 1
            return text[start:start + 4000]
    return None


# ---- client ------------------------------------------------------------------

class Client:
    """One channel to one server; every RPC has a deadline. creds: TLS
    channel credentials (grpc.ssl_channel_credentials), None: plaintext.
    options: the channel's (e.g. FIXED_WINDOWS)."""

    def __init__(self, addr, token=None, creds=None, options=()):
        self.addr = addr
        self.channel = (grpc.secure_channel(addr, creds, options=options) if creds is not None
                        else grpc.insecure_channel(addr, options=options))
        self.stub = pbg.SessionServiceStub(self.channel)
        self.md = (("authorization", "Bearer " + token),) if token else ()
        self._health = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    def close(self):
        self.channel.close()

    # generic
    def call(self, method, request, timeout=RPC_TIMEOUT, metadata=None):
        md = self.md if metadata is None else metadata
        return getattr(self.stub, method)(request, timeout=timeout, metadata=md)

    def call_lsn(self, method, request, timeout=RPC_TIMEOUT):
        """Returns (response, engram-lsn value or None)."""
        resp, call = getattr(self.stub, method).with_call(request, timeout=timeout,
                                                          metadata=self.md)
        lsn = None
        for k, v in call.initial_metadata() or ():
            if k == "engram-lsn":
                lsn = v
        return resp, lsn

    def raw(self, path, payload, timeout=RPC_TIMEOUT, metadata=None):
        """Unary call with raw request bytes; returns raw response bytes."""
        md = self.md if metadata is None else metadata
        fn = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        return fn(payload, timeout=timeout, metadata=md)

    def health(self, service="", timeout=RPC_TIMEOUT):
        return self._health(health_pb2.HealthCheckRequest(service=service),
                            timeout=timeout).status

    # SessionService shorthands
    def create(self, user_id, session_id="", agent_id="", metadata=None):
        s = pb.Session(user_id=user_id, session_id=session_id, agent_id=agent_id,
                       metadata=metadata or {})
        return self.call("CreateSession", pb.CreateSessionRequest(session=s))

    def get(self, session_id):
        return self.call("GetSession", pb.GetSessionRequest(session_id=session_id))

    def list_sessions(self, user_id, page_size=0, page_token=""):
        return self.call("ListSessions", pb.ListSessionsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token))

    def end(self, session_id):
        return self.call("EndSession", pb.EndSessionRequest(session_id=session_id))

    def delete(self, session_id):
        return self.call("DeleteSession", pb.DeleteSessionRequest(session_id=session_id))

    def append(self, session_id, *messages):
        msgs = [M(m) if isinstance(m, str) else m for m in messages]
        return self.call("AppendMessages",
                         pb.AppendMessagesRequest(session_id=session_id, messages=msgs))

    def list_messages(self, session_id, page_size=0, page_token="", newest_first=False):
        return self.call("ListMessages", pb.ListMessagesRequest(
            session_id=session_id, page_size=page_size, page_token=page_token,
            newest_first=newest_first))

    def all_messages(self, session_id, newest_first=False, page_size=1000, max_pages=1000):
        out, token = [], ""
        for _ in range(max_pages):
            r = self.list_messages(session_id, page_size, token, newest_first)
            out.extend(r.messages)
            token = r.next_page_token
            if not token:
                return out
        raise AssertionError("ListMessages did not end within %d pages" % max_pages)

    def context(self, session_id, max_messages=0, max_tokens=0):
        return self.call("GetContext", pb.GetContextRequest(
            session_id=session_id, max_messages=max_messages, max_tokens=max_tokens))

    def update_summary(self, session_id, summary, through_seq):
        return self.call("UpdateSummary", pb.UpdateSummaryRequest(
            session_id=session_id, summary=summary, through_seq=through_seq))


# ---- server ------------------------------------------------------------------

class Server:
    """One engramd process (restartable on the same data dir)."""

    def __init__(self, *extra_args, tokens=None, env=None, data_dir=None, keyring=None,
                 create_data_dir=True, port=None, creds=None):
        """creds: the TLS channel credentials its health checks and client()
        use (a server run with --tls-cert); None: plaintext."""
        if not os.path.isfile(ENGRAMD):
            raise AssertionError("engramd not found at %s (set ENGRAMD)" % ENGRAMD)
        self.tmp = tempfile.mkdtemp(prefix="engram-e2e-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        if create_data_dir:
            os.makedirs(self.data_dir, exist_ok=True)
        self.extra = [str(a) for a in extra_args]
        self.tokens_path = None
        if tokens is not None:
            self.tokens_path = write_tokens(os.path.join(self.tmp, "tokens"), tokens)
        self.keyring = keyring
        self.fixed_port = port  # None: --listen 127.0.0.1:0, a new port each start
        self.creds = creds
        self.env = clean_env()
        self.env.update(env or {})
        self.proc = None
        self.port = None
        self.starts = 0
        self.log_path = None
        self.clients = []
        self.last_exit = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    @property
    def keyring_path(self):
        return self.keyring or os.path.join(self.data_dir, "keyring")

    def argv(self):
        a = [ENGRAMD, "--listen", "127.0.0.1:%d" % (self.fixed_port or 0),
             "--data-dir", self.data_dir]
        if self.tokens_path:
            a += ["--tokens", self.tokens_path]
        if self.keyring:
            a += ["--keyring", self.keyring]
        return a + self.extra

    def log_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def listen_count(self):
        """How many times this start's log says "listening on": more than
        once after the process re-executed itself (same PID), e.g. a
        replica installing a snapshot."""
        return len(LISTEN_RE.findall(self.log_text()))

    def wait_serving(self, timeout=START_TIMEOUT, listens=1):
        """Waits until the log has `listens` "listening on" lines and the
        server answers Health SERVING (a replica: SERVING or NOT_SERVING);
        follows the port of the last line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = LISTEN_RE.findall(self.log_text())
            if len(ports) >= listens:
                self.port = int(ports[-1])
                break
            if self.proc is None or self.proc.poll() is not None:
                self._fail("engramd exited while waiting for listening line #%d" % listens)
            time.sleep(0.02)
        else:
            self._fail("no listening line #%d within %ss" % (listens, timeout))
        c = Client(self.addr, creds=self.creds)
        try:
            last = None
            while time.monotonic() < deadline:
                try:
                    st = c.health(timeout=1.0)
                    # A replica that is not streaming yet (its primary down,
                    # or refused) is up but not ready: NOT_SERVING.
                    if st == SERVING or (st == NOT_SERVING and
                                         "engramd: replica of" in self.log_text()):
                        return self
                except grpc.RpcError as e:
                    last = e
                if self.proc is None or self.proc.poll() is not None:
                    self._fail("engramd exited before SERVING")
                time.sleep(0.02)
        finally:
            c.close()
        self._fail("Health/Check not SERVING within %ss (last: %r)" % (timeout, last))

    def _fail(self, why):
        raise AssertionError("%s\n--- engramd log (%s) ---\n%s" % (why, self.log_path,
                                                                   self.log_text()[-4000:]))

    def start(self):
        assert self.proc is None, "already running"
        self.starts += 1
        self.log_path = os.path.join(self.tmp, "engramd.%d.log" % self.starts)
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        self.port = None
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.log_text())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                self._fail("engramd exited with %s before listening" % rc)
            time.sleep(0.02)
        if self.port is None:
            self.kill9(check=False)
            self._fail("no 'engramd: listening on 127.0.0.1:PORT' line within %ss" % START_TIMEOUT)
        c = Client(self.addr, creds=self.creds)
        try:
            last = None
            while time.monotonic() < deadline:
                try:
                    st = c.health(timeout=1.0)
                    # A replica that is not streaming yet (its primary down,
                    # or refused) is up but not ready: NOT_SERVING.
                    if st == SERVING or (st == NOT_SERVING and
                                         "engramd: replica of" in self.log_text()):
                        return self
                except grpc.RpcError as e:
                    last = e
                if self.proc.poll() is not None:
                    self.proc = None
                    self._fail("engramd exited before SERVING")
                time.sleep(0.02)
        finally:
            c.close()
        self.kill9(check=False)
        self._fail("Health/Check not SERVING within %ss (last: %r)" % (START_TIMEOUT, last))

    def _close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []

    def check_log(self):
        rep = scan_sanitizer(self.log_text())
        if rep:
            raise AssertionError("sanitizer report in %s:\n%s" % (self.log_path, rep))

    def stop(self, check=True):
        """SIGTERM, wait <= 15 s for a clean exit (status 0), check the log."""
        if self.proc is None:
            return
        self._close_clients()
        p, self.proc = self.proc, None
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=STOP_TIMEOUT)
            if check:
                self._fail("engramd did not exit within %ss of SIGTERM" % STOP_TIMEOUT)
            return
        self.last_exit = rc
        if check:
            self.check_log()
            if rc != 0:
                self._fail("engramd exited with status %s after SIGTERM (want 0)" % rc)

    def kill9(self, check=True):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        p.kill()
        p.wait(timeout=STOP_TIMEOUT)
        self._close_clients()
        if check:
            self.check_log()

    def restart(self):
        self.stop()
        return self.start()

    def died(self):
        """If the process exited on its own, reaps it and returns its exit
        status; else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc, self.proc = self.proc.returncode, None
        self.last_exit = rc
        self._close_clients()
        return rc

    def client(self, token=None, creds=None, options=()):
        """A client of this server; creds default to the server's."""
        c = Client(self.addr, token, creds if creds is not None else self.creds, options)
        self.clients.append(c)
        return c

    def close(self):
        """Stops (checked) and removes the temp dir, even when the stop fails."""
        try:
            self.stop()
        finally:
            self._close_clients()
            if self.proc is not None:
                self.kill9(check=False)
            if not KEEP:
                shutil.rmtree(self.tmp, ignore_errors=True)


# ---- test bases ---------------------------------------------------------------

class E2ETestCase(unittest.TestCase):
    maxDiff = 4000

    def assertStatus(self, code, fn, *args, field=None, **kw):
        """Calls fn(*args, **kw); asserts it fails with `code` (and that the
        details name `field`). Returns the RpcError."""
        try:
            fn(*args, **kw)
        except grpc.RpcError as e:
            got = e.code()
            self.assertNotEqual(got, grpc.StatusCode.UNKNOWN,
                                "status UNKNOWN (details %r)" % e.details())
            self.assertEqual(got, code, "want %s, got %s: %r" % (code.name, got.name, e.details()))
            if field is not None:
                self.assertIn(field, e.details() or "",
                              "%s details should name %r" % (code.name, field))
            return e
        self.fail("want %s, but the call succeeded" % code.name)

    def assertInvalid(self, fn, *args, field, **kw):
        return self.assertStatus(grpc.StatusCode.INVALID_ARGUMENT, fn, *args, field=field, **kw)

    def assertSeqs(self, msgs, seqs):
        self.assertEqual([m.seq for m in msgs], list(seqs))

    # What fn may raise in wait_until while the thing waited for is not
    # there yet: a call to a node that is starting, stopping or changing.
    NOT_YET = (grpc.RpcError,)

    def wait_until(self, fn, timeout, what, nodes=()):
        """Calls fn() until it returns something true, and returns that; an
        exception in NOT_YET counts as not yet. Fails after timeout seconds
        with `what`, the last such error and self.logs(*nodes)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                v = fn()
                if v:
                    return v
            except self.NOT_YET as e:
                last = e
            time.sleep(0.05)
        if isinstance(last, grpc.RpcError):
            last = "%s %s" % (last.code().name, last.details())
        self.fail("%s not within %ss (last error: %s)\n%s"
                  % (what, timeout, last, self.logs(*nodes)))

    def logs(self, *nodes):
        """What a failed wait shows: the end of each node's log."""
        return "\n".join(tail(n) for n in nodes)

    def start_server(self, *args, **kw):
        """A Server(*args, **kw) started for this test, closed at cleanup."""
        server = Server(*args, **kw)
        self.addCleanup(server.close)
        server.start()
        return server


class ServerTestCase(E2ETestCase):
    """One server shared by the tests of a class. A test during which the
    server dies fails (with the log), and the server is restarted on the same
    data dir so the following tests still mean something."""
    server_args = ()
    server_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args, **cls.server_kwargs)
        try:
            cls.server.start()
        except BaseException:
            cls.server.close()
            raise
        cls.connect()

    @classmethod
    def connect(cls):
        """Makes the class's clients (again after a restart)."""
        cls.client = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    @classmethod
    def revive(cls):
        cls.server.start()
        cls.connect()

    def setUp(self):
        if self.server.proc is None:
            self.revive()

    def tearDown(self):
        rc = self.server.died()
        if rc is None and self.server.proc is not None:
            # A crash may still be in progress (abort() writing its report):
            # one health check tells, then give the process time to exit.
            try:
                c = Client(self.server.addr, creds=self.server.creds)
                try:
                    c.health(timeout=3.0)
                finally:
                    c.close()
            except grpc.RpcError:
                try:
                    self.server.proc.wait(timeout=3.0)
                except subprocess.TimeoutExpired:
                    pass
                rc = self.server.died()
        if rc is not None:
            log = self.server.log_text()
            self.revive()
            self.fail("engramd died during this test (exit status %s); log tail:\n%s"
                      % (rc, log[-3000:]))


def run_threads(fns, timeout):
    """Runs each fn in its own thread; joins with a bound; re-raises the
    first exception."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: B902
                errors.append(e)
        return run

    ts = [threading.Thread(target=wrap(f), daemon=True) for f in fns]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in ts if t.is_alive()]
    if alive:
        raise AssertionError("%d threads still running after %ss" % (len(alive), timeout))
    if errors:
        raise errors[0]


def restore_key_store(src, data_dir, token=None):
    """Puts src's key store in place as data_dir's (docs/operations.md,
    "Backing up and restoring the key store"): with src running, the copy
    `engram admin keys backup` takes (with token, an admin one, if src has
    a tokens file); stopped, its file. A restored data dir needs the key
    store its fields are sealed under: engramd refuses to start one that has
    used a key store without it."""
    ks = os.path.join(data_dir, "keystore")
    os.makedirs(ks, mode=0o700, exist_ok=True)
    out = os.path.join(ks, "data.mdb")
    if src.proc is not None and src.proc.poll() is None:
        argv = [ENGRAM_CLI, "--target", src.addr] + (["--token", token] if token else [])
        subprocess.run(argv + ["admin", "keys", "backup", "--out", out, "--force"], check=True,
                       capture_output=True, timeout=60, env=clean_env())
    else:
        shutil.copyfile(os.path.join(src.data_dir, "keystore", "data.mdb"), out)
        os.chmod(out, 0o600)
