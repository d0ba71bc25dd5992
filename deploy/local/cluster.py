#!/usr/bin/python3
"""The ha topology as local processes: 3 etcd members (one cluster) and 3
engramd that let etcd elect their primary, all on 127.0.0.1. For
development (`make local-ha`) and for tests/e2e/test_failover.py.
Standard library only; needs etcd and etcdctl (Debian's etcd-server and
etcd-client) and a built engramd + engram.

    deploy/local/cluster.py up [--dir D] [--detach]   start; foreground: Ctrl-C stops all
    deploy/local/cluster.py status [--dir D]          leader, epoch, each node's role and LSN
    deploy/local/cluster.py down [--dir D]            SIGTERM every process, by PID

The engramd flags are those of deploy/k8s/overlays/ha: --coordinator
etcd://E1,E2,E3/engram, ENGRAMD_SETTINGS below (--sync-replicas 1,
--lease-ttl-s 3, ...), node ids node-1..node-3, each advertising
127.0.0.1:PORT; etcd runs with the overlay's ETCD_SETTINGS. The nodes share one
keyring (made with `engram keygen`) and one tokens file holding an agent,
an admin and a replica token; D/cluster.json has the addresses, tokens
and PIDs (`status` and `down` read it).

As a module:

    c = LocalCluster(base_dir)        # nothing started yet
    c.up()                            # etcd, then node 0 (leads), then the others
    c.leader()                        # the Leader in etcd as a dict, or None
    c.kill9(i); c.start(i)            # engramd i by PID, same data dir and port
    c.term(i); c.pause(i); c.resume(i)
    c.etcd_pause(j); c.etcd_resume(j)
    c.down()

Every wait is bounded and every process is signalled by its PID only.
"""
import argparse
import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGRAMD = os.environ.get("ENGRAMD") or os.path.join(REPO, "build", "engramd")
ENGRAM_CLI = os.environ.get("ENGRAM_CLI") or os.path.join(REPO, "build", "engram")
ETCD = os.environ.get("ETCD") or "/usr/bin/etcd"
ETCDCTL = os.environ.get("ETCDCTL") or "/usr/bin/etcdctl"

# The ha overlay's settings (deploy/k8s/overlays/ha and its base), which
# tests/e2e/test_k8s_manifests.py checks are the same: the prefix, every
# engramd flag that names no address, path or secret, and etcd's flags.
PREFIX = "engram"
ENGRAMD_SETTINGS = {"--sync-replicas": 1, "--lease-ttl-s": 3, "--failover-max-lag": 10000,
                    "--max-serving-lag-ms": 10000, "--shutdown-grace-ms": 20000,
                    "--max-connection-age-ms": 300000}
ETCD_SETTINGS = ["--initial-cluster-state=new",
                 # A member back from a pause or partition must not depose
                 # etcd's leader (3.4 defaults to false; 3.5 to true).
                 "--pre-vote=true",
                 # Every tick's member key is a new revision: keep an hour.
                 "--auto-compaction-mode=periodic", "--auto-compaction-retention=1h"]

START_TIMEOUT = 30.0  # a process's first sign of life (etcd healthy, engramd listening)
STOP_TIMEOUT = 30.0   # SIGTERM -> exit: a drain takes up to --shutdown-grace-ms (20 s)
READY_TIMEOUT = 60.0  # a leader elected and every running node SERVING
CTL_TIMEOUT = 10.0    # one etcdctl or engram CLI call


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    """os.environ without ENGRAM_* and ETCDCTL_*: engramd, the CLI and
    etcdctl read settings from those, and the caller's shell must not
    change the cluster."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("ENGRAM_") and not k.startswith("ETCDCTL_")}


# ---- the protobuf values in etcd (proto/engram/coord/v1/coord.proto) ----------

def _varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, i
        shift += 7


def _fields(buf):
    """{field number: value} of a protobuf message (varints and
    length-delimited fields; the last occurrence wins)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            out[num], i = buf[i:i + n], i + n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
    return out


def decode(buf, names):
    """names: {field number: (name, "str"|"int"|"bool")} -> dict of every name."""
    f = _fields(buf)
    out = {}
    for num, (name, kind) in names.items():
        v = f.get(num)
        if kind == "str":
            out[name] = v.decode() if v is not None else ""
        elif kind == "bool":
            out[name] = bool(v)
        else:
            out[name] = v or 0
    return out


LEADER_FIELDS = {1: ("id", "str"), 2: ("address", "str"), 3: ("epoch", "int"),
                 4: ("lease", "int")}
MEMBER_FIELDS = {1: ("id", "str"), 2: ("address", "str"), 3: ("role", "str"),
                 4: ("epoch", "int"), 5: ("applied_lsn", "int"), 6: ("last_epoch", "int"),
                 7: ("healthy", "bool"), 8: ("updated_us", "int")}


# ---- etcd ---------------------------------------------------------------------------

def etcdctl(endpoints, *args, timeout=CTL_TIMEOUT, check=True):
    """Runs etcdctl against endpoints (HOST:PORT list); RuntimeError if it
    fails and check."""
    p = subprocess.run([ETCDCTL, "--endpoints", ",".join(endpoints),
                        "--command-timeout", "%ds" % max(1, int(timeout) - 1)] +
                       [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=clean_env())
    if check and p.returncode != 0:
        raise RuntimeError("etcdctl %s: %s" % (" ".join(map(str, args)),
                                              p.stderr.decode(errors="replace").strip()))
    return p


def etcd_get(endpoints, key, prefix=False):
    """[(key, value bytes, mod_revision, lease)] at key (or under it)."""
    args = ["get", key, "-w", "json"] + (["--prefix"] if prefix else [])
    kvs = json.loads(etcdctl(endpoints, *args).stdout).get("kvs") or []
    return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")),
             int(kv.get("mod_revision", 0)), int(kv.get("lease", 0))) for kv in kvs]


# ---- processes -----------------------------------------------------------------

class Proc:
    """One process we start (etcd member or engramd), restartable with the
    same arguments; its output appended to one log file."""

    def __init__(self, name, log_path, env):
        self.name = name
        self.log_path = log_path
        self.env = env
        self.popen = None
        self.pid = None  # also set from cluster.json, for `down`/`status`

    def argv(self):
        raise NotImplementedError

    def spawn(self):
        assert not self.running(), "%s already running" % self.name
        with open(self.log_path, "ab") as log:
            log.write(b"=== %s: start %s\n" % (self.name.encode(), time.strftime("%T").encode()))
            log.flush()
            self.popen = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env,
                                          start_new_session=True)
        self.pid = self.popen.pid

    def running(self):
        if self.popen is not None:
            return self.popen.poll() is None
        return self.pid is not None and _pid_is(self.pid, self.log_marker())

    def log_marker(self):
        """A string in this process's command line (its data dir): how
        `down` tells our PID from a recycled one."""
        raise NotImplementedError

    def signal(self, sig):
        if self.running():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.05)
        return False

    def kill9(self):
        if not self.running():
            return
        os.kill(self.pid, signal.SIGKILL)
        self.wait_exit(STOP_TIMEOUT)
        self._forget()

    def term(self, timeout=STOP_TIMEOUT):
        """SIGTERM (SIGCONT first, a stopped process cannot exit); SIGKILL
        after timeout. Returns the exit status (None: not ours to reap)."""
        if not self.running():
            self._forget()
            return None
        os.kill(self.pid, signal.SIGTERM)
        os.kill(self.pid, signal.SIGCONT)
        if not self.wait_exit(timeout):
            os.kill(self.pid, signal.SIGKILL)
            self.wait_exit(STOP_TIMEOUT)
        rc = self.popen.returncode if self.popen is not None else None
        self._forget()
        return rc

    def _forget(self):
        self.popen = None
        self.pid = None

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def _pid_is(pid, marker):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and marker.encode() in cmd


class EtcdMember(Proc):
    def __init__(self, base, index, cluster_token, env):
        self.index = index
        self.dir = os.path.join(base, "etcd-%d" % (index + 1))
        os.makedirs(self.dir, exist_ok=True)
        super().__init__("etcd-%d" % (index + 1), os.path.join(self.dir, "etcd.log"), env)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.cluster_token = cluster_token
        self.initial_cluster = None  # set by the cluster once every member has ports

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def log_marker(self):
        return os.path.join(self.dir, "data")

    def argv(self):
        client = "http://" + self.endpoint
        return [ETCD, "--name", self.name, "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster,
                "--initial-cluster-token", self.cluster_token,
                "--logger", "zap", "--log-level", "warn"] + ETCD_SETTINGS


class Node(Proc):
    """One engramd; --listen and --advertise-address on a fixed port, so a
    restart keeps its address."""

    def __init__(self, cluster, index, env):
        self.index = index
        self.id = "node-%d" % (index + 1)
        self.dir = os.path.join(cluster.base_dir, self.id)
        self.data_dir = os.path.join(self.dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        super().__init__(self.id, os.path.join(self.dir, "engramd.log"), env)
        self.cluster = cluster
        self.port = free_port()
        self.etcd = None  # indices of the etcd members it is given (None: all)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def log_marker(self):
        return self.data_dir

    def coordinator_url(self):
        c = self.cluster
        members = c.etcd if self.etcd is None else [c.etcd[j] for j in self.etcd]
        return "etcd://%s/%s" % (",".join(m.endpoint for m in members), c.prefix)

    def argv(self):
        c = self.cluster
        return [c.engramd, "--listen", self.address, "--data-dir", self.data_dir,
                "--tokens", c.tokens_path, "--keyring", c.keyring_path,
                "--coordinator", self.coordinator_url(),
                "--advertise-address", self.address, "--replica-id", self.id,
                "--replica-token", c.tokens["replica"]] + [
                    str(a) for kv in c.settings.items() for a in kv]

    def listen_count(self):
        """"listening on" lines in the log: one more each start or re-exec
        (a replica installing a snapshot, a deposed primary restarting)."""
        return self.log_text().count("engramd: listening on %s" % self.address)


# ---- the cluster ------------------------------------------------------------------

class LocalCluster:
    """n_etcd etcd members and n_engram engramd under base_dir (created if
    missing; a fresh cluster each time: pass an empty or new directory).

    settings: {flag: value} for every node, over ENGRAMD_SETTINGS (e.g.
    {"--sync-replicas": 0}). node_etcd: {node index: [etcd indices]} gives
    a node only those etcd members (default all)."""

    def __init__(self, base_dir, n_etcd=3, n_engram=3, engramd=None, cli=None,
                 prefix=PREFIX, settings=None, node_etcd=None):
        self.base_dir = os.path.abspath(base_dir)
        os.makedirs(self.base_dir, exist_ok=True)
        self.engramd = engramd or ENGRAMD
        self.cli = cli or ENGRAM_CLI
        for path in (self.engramd, self.cli, ETCD, ETCDCTL):
            if not os.access(path, os.X_OK):
                raise RuntimeError("%s not found (build engram; apt-get install etcd-server "
                                   "etcd-client; or set ENGRAMD, ENGRAM_CLI, ETCD, ETCDCTL)"
                                   % path)
        self.prefix = prefix
        self.settings = {**ENGRAMD_SETTINGS, **(settings or {})}
        self.env = clean_env()
        token = "engram-local-" + secrets.token_hex(4)
        self.etcd = [EtcdMember(self.base_dir, j, token, self.env) for j in range(n_etcd)]
        initial = ",".join("%s=%s" % (m.name, m.peer_url) for m in self.etcd)
        for m in self.etcd:
            m.initial_cluster = initial
        self.tokens = {role: "%s-%s" % (role, secrets.token_hex(12))
                       for role in ("agent", "admin", "replica")}
        self.tokens_path = os.path.join(self.base_dir, "tokens")
        self.keyring_path = os.path.join(self.base_dir, "keyring")
        self.nodes = [Node(self, i, self.env) for i in range(n_engram)]
        for i, js in (node_etcd or {}).items():
            self.nodes[i].etcd = list(js)
        self._write_secrets()

    # -- set-up --------------------------------------------------------------------

    def _write_secrets(self):
        """A keyring every node shares (a replica holds the primary's sealed
        data) and a tokens file: tenant `local`, one token per role."""
        line = subprocess.run([self.cli, "keygen", "--id", "1"], stdout=subprocess.PIPE,
                              check=True, timeout=CTL_TIMEOUT, env=self.env).stdout.decode()
        fd = os.open(self.keyring_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("primary 1\n" + line)
        fd = os.open(self.tokens_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# tenant role sha256-hex-of-token\n")
            for role, tok in self.tokens.items():
                f.write("local %s %s\n" % (role, hashlib.sha256(tok.encode()).hexdigest()))

    def save(self):
        """D/cluster.json: what `status` and `down` (and a person) need."""
        state = {"prefix": self.prefix, "tokens": self.tokens,
                 "etcd": [{"name": m.name, "endpoint": m.endpoint, "pid": m.pid,
                           "dir": m.dir} for m in self.etcd],
                 "nodes": [{"id": n.id, "address": n.address, "pid": n.pid, "dir": n.dir,
                            "log": n.log_path} for n in self.nodes]}
        tmp = os.path.join(self.base_dir, "cluster.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, os.path.join(self.base_dir, "cluster.json"))

    def up(self, timeout=READY_TIMEOUT):
        """Starts etcd, then node 0 alone until it leads (so the first
        primary is known), then the others; returns once every node is
        SERVING."""
        for m in self.etcd:
            m.spawn()
        self.save()
        self.wait_etcd(range(len(self.etcd)))
        self.start(0)
        self.wait_leader(timeout, want=0)
        for i in range(1, len(self.nodes)):
            self.start(i)
        self.wait_ready(timeout)
        return self

    def down(self):
        """SIGTERM to every engramd, then to every etcd member. Returns
        {name: exit status} of the nodes we could reap."""
        out = {}
        for n in self.nodes:
            out[n.id] = n.term()
        for m in self.etcd:
            m.term()
        self.save()
        return out

    # -- etcd --------------------------------------------------------------------------

    def etcdctl(self, *args, endpoints=None, timeout=CTL_TIMEOUT, check=True):
        eps = endpoints or [m.endpoint for m in self.etcd if m.running()]
        return etcdctl(eps, *args, timeout=timeout, check=check)

    def wait_etcd(self, members, timeout=START_TIMEOUT):
        """Until each of these etcd members answers `endpoint health`."""
        eps = [self.etcd[j].endpoint for j in members]
        deadline = time.monotonic() + timeout
        while True:
            for j in members:
                if not self.etcd[j].running():
                    raise RuntimeError("%s exited:\n%s" % (self.etcd[j].name,
                                                           self.etcd[j].log_text()[-3000:]))
            p = self.etcdctl("endpoint", "health", endpoints=eps, timeout=5, check=False)
            if p.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("etcd not healthy within %ss: %s" %
                                   (timeout, p.stderr.decode(errors="replace")))
            time.sleep(0.1)

    def key(self, name):
        return "/%s/%s" % (self.prefix, name)

    def get(self, name, prefix=False, endpoints=None):
        """[(key, value bytes, mod_revision, lease)] under /PREFIX/name (a
        linearizable read, through `endpoints` if given)."""
        eps = endpoints or [m.endpoint for m in self.etcd if m.running()]
        return etcd_get(eps, self.key(name), prefix)

    def leader(self, endpoints=None):
        """PREFIX/leader as {id, address, epoch, lease}, or None."""
        kvs = self.get("leader", endpoints=endpoints)
        return decode(kvs[0][1], LEADER_FIELDS) if kvs else None

    def epoch(self):
        """PREFIX/epoch (0: absent)."""
        kvs = self.get("epoch")
        return int(kvs[0][1]) if kvs else 0

    def leader_lsn(self):
        kvs = self.get("leader_lsn")
        return int(kvs[0][1]) if kvs else 0

    def members(self):
        """{id: Member as a dict} of every PREFIX/members/ key."""
        return {m["id"]: m for m in (decode(v, MEMBER_FIELDS)
                                     for _, v, _, _ in self.get("members/", prefix=True))}

    def node_index(self, node_id):
        return next(n.index for n in self.nodes if n.id == node_id)

    def leader_index(self):
        """Index of the node holding the leader key, or None."""
        ld = self.leader()
        return self.node_index(ld["id"]) if ld else None

    def wait_leader(self, timeout=READY_TIMEOUT, want=None, not_in=()):
        """Waits until the leader key names a node (node `want`, if given;
        none of not_in) and that node answers SERVING. Returns (index,
        Leader dict)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                ld = self.leader()
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                ld, last = None, e
            if ld:
                i = self.node_index(ld["id"])
                last = ld
                if (want is None or i == want) and i not in not_in and self.serving(i):
                    return i, ld
            time.sleep(0.05)
        raise RuntimeError("no leader (want %s, not %s) within %ss (last: %r)\n%s"
                           % (want, list(not_in), timeout, last, self.tails()))

    def etcd_pause(self, j):
        self.etcd[j].signal(signal.SIGSTOP)

    def etcd_resume(self, j):
        self.etcd[j].signal(signal.SIGCONT)

    # -- engramd ---------------------------------------------------------------------

    def start(self, i, timeout=START_TIMEOUT):
        """Starts node i (same data dir and port as before) and waits for
        its "listening" line; it answers SERVING only once it leads or
        streams from the leader (wait_ready)."""
        n = self.nodes[i]
        before = n.listen_count()
        n.spawn()
        self.save()
        deadline = time.monotonic() + timeout
        while n.listen_count() <= before:
            if not n.running():
                raise RuntimeError("%s exited before listening:\n%s"
                                   % (n.id, n.log_text()[-3000:]))
            if time.monotonic() > deadline:
                raise RuntimeError("%s: no listening line within %ss:\n%s"
                                   % (n.id, timeout, n.log_text()[-3000:]))
            time.sleep(0.02)
        return n

    def kill9(self, i):
        self.nodes[i].kill9()
        self.save()

    def term(self, i):
        """SIGTERM (a leader revokes its lease: the others elect at once).
        Returns the exit status."""
        rc = self.nodes[i].term()
        self.save()
        return rc

    def pause(self, i):
        self.nodes[i].signal(signal.SIGSTOP)

    def resume(self, i):
        self.nodes[i].signal(signal.SIGCONT)

    def cli_call(self, i, *args, json_out=True, token="admin", timeout=CTL_TIMEOUT):
        """Runs the engram CLI against node i; returns (exit status, stdout)."""
        argv = [self.cli, "--target", self.nodes[i].address, "--token", self.tokens[token],
                "--timeout", str(int(timeout * 1000))]
        if json_out:
            argv.append("--json")
        p = subprocess.run(argv + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           timeout=timeout + 5, env=self.env)
        return p.returncode, p.stdout.decode(errors="replace")

    def serving(self, i):
        """Health/Check says SERVING (the CLI's `health`)."""
        if not self.nodes[i].running():
            return False
        return self.cli_call(i, "health", json_out=False, timeout=2)[0] == 0

    def status(self, i):
        """GetStatus of node i as proto3 JSON (a dict), or None."""
        rc, out = self.cli_call(i, "admin", "status", timeout=3)
        return json.loads(out) if rc == 0 and out.strip() else None

    def wait_ready(self, timeout=READY_TIMEOUT):
        """A leader, and every running node SERVING."""
        self.wait_leader(timeout)
        deadline = time.monotonic() + timeout
        while True:
            waiting = [n.id for n in self.nodes if n.running() and not self.serving(n.index)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("not SERVING within %ss: %s\n%s"
                                   % (timeout, waiting, self.tails()))
            time.sleep(0.1)

    def tails(self, n=2500):
        return "\n".join("--- %s (%s) ---\n%s" % (p.name, p.log_path, p.log_text()[-n:])
                         for p in self.nodes)


# ---- command line -------------------------------------------------------------------

def _load(base_dir):
    """The PIDs and addresses of a cluster started by `up` (possibly in
    another process)."""
    path = os.path.join(base_dir, "cluster.json")
    with open(path) as f:
        st = json.load(f)
    return st


def cmd_up(args):
    # A new cluster each time (etcd keeps its members' ports in its data):
    # the dir of a stopped one is replaced, anything else is left alone.
    if os.path.exists(os.path.join(args.dir, "cluster.json")):
        st = _load(args.dir)
        alive = [p["pid"] for p in st["etcd"] + st["nodes"]
                 if p["pid"] and _pid_is(p["pid"], p["dir"])]
        if alive:
            sys.exit("cluster.py: a cluster is running in %s (PIDs %s): `down` first"
                     % (args.dir, alive))
        shutil.rmtree(args.dir)
    elif os.path.isdir(args.dir) and os.listdir(args.dir):
        sys.exit("cluster.py: %s is not empty and holds no cluster.json" % args.dir)
    c = LocalCluster(args.dir)
    try:
        c.up()
    except BaseException:
        c.down()
        raise
    i, ld = c.wait_leader()
    print("etcd:   %s" % ",".join(m.endpoint for m in c.etcd))
    for n in c.nodes:
        print("%s: %s  pid %d%s" % (n.id, n.address, n.pid, "  (primary)" if n.index == i else ""))
    print("tokens: agent %s  admin %s" % (c.tokens["agent"], c.tokens["admin"]))
    print("try:    %s --target %s --token %s session create --user u1"
          % (os.path.relpath(c.cli), c.nodes[1].address, c.tokens["agent"]))
    if args.detach:
        print("state in %s/cluster.json; stop with: %s down --dir %s"
              % (args.dir, sys.argv[0], args.dir))
        return
    print("Ctrl-C stops all")
    stop = []
    # SIGINT too: a shell starts a background job with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(0.2)
    finally:
        c.down()
        print("stopped; data and logs kept in %s" % args.dir)


def cmd_down(args):
    st = _load(args.dir)
    for p in st["nodes"] + st["etcd"]:
        proc = _Attached(p)
        if proc.running():
            proc.term()
            print("%s (pid %d) stopped" % (p.get("id") or p.get("name"), p["pid"]))
        p["pid"] = None
    with open(os.path.join(args.dir, "cluster.json"), "w") as f:
        json.dump(st, f, indent=1)


class _Attached(Proc):
    """A process `up` started in another invocation, known by PID only."""

    def __init__(self, p):
        super().__init__(p.get("id") or p.get("name"), "", {})
        self.pid = p["pid"]
        self.marker = p["dir"]

    def log_marker(self):
        return self.marker


def cmd_status(args):
    st = _load(args.dir)
    env = clean_env()
    try:
        kvs = etcd_get([m["endpoint"] for m in st["etcd"]], "/%s/" % st["prefix"], prefix=True)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print("etcd: %s" % e)
        kvs = []
    for k, v, _, _ in kvs:
        if k.endswith("/leader"):
            print("%s  %s" % (k, decode(v, LEADER_FIELDS)))
        elif "/members/" in k:
            print("%s  %s" % (k, decode(v, MEMBER_FIELDS)))
        else:
            print("%s  %s" % (k, v.decode(errors="replace")))
    for n in st["nodes"]:
        q = subprocess.run([ENGRAM_CLI, "--target", n["address"], "--token",
                            st["tokens"]["admin"], "--json", "--timeout", "3000",
                            "admin", "status"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=CTL_TIMEOUT, env=env)
        s = json.loads(q.stdout) if q.returncode == 0 and q.stdout.strip() else {}
        print("%s %s pid %s: %s" % (n["id"], n["address"], n["pid"],
                                  {k: s.get(k) for k in ("role", "epoch", "lastLsn", "primary",
                                                         "serving", "notServingReason",
                                                         "fenced", "failoverProblem")}
                                  if s else q.stderr.decode(errors="replace").strip()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("up", "down", "status"))
    ap.add_argument("--dir", default=os.path.join(REPO, "data", "local-ha"),
                    help="where the cluster's data, logs and cluster.json live "
                         "(default data/local-ha)")
    ap.add_argument("--detach", action="store_true",
                    help="up: return once the cluster is ready, leaving it running")
    args = ap.parse_args()
    args.dir = os.path.abspath(args.dir)
    {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command](args)


if __name__ == "__main__":
    main()
