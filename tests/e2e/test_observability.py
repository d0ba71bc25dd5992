"""The Prometheus endpoint: the exposition text parses (a strict parser
of the text format below: HELP and TYPE before a family's samples, names
and labels well formed, label values escaped, histograms cumulative with
a +Inf bucket equal to _count); latency histograms and in-flight gauges
per service and method move with calls; replication lag on a replica and
per replica on the primary; process metrics; build info; unknown paths
404."""
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import urllib.error
import urllib.request

from harness import E2ETestCase, Server, free_port, make_keyring, uid  # noqa: F401

AGENT, REPL = "agent-token-1", "replica-token-1"
TOKENS = [("acme", "agent", AGENT), ("acme", "replica", REPL)]
CONVERGE_TIMEOUT = 60.0

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s)(?:,%s)*\})? (\S+)$" % (NAME, LABEL, LABEL))
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """{family: {"type", "help", "samples": [(name, {labels}, value)]}};
    raises AssertionError on anything the text format does not allow."""
    assert text.endswith("\n"), "the text does not end in a newline"
    fams, cur = {}, None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and doc, "line %d: bad HELP" % n
            assert name not in fams, "line %d: %s described twice" % (n, name)
            fams[name] = {"help": doc, "type": None, "samples": []}
            cur = name
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert name == cur and typ in TYPES, "line %d: TYPE %r after HELP of %s" % (n, line, cur)
            fams[name]["type"] = typ
        else:
            m = SAMPLE.match(line)
            assert m, "line %d: not a sample: %r" % (n, line)
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            fam = cur if cur and (name == cur or (fams[cur]["type"] == "histogram" and name in
                                  (cur + "_bucket", cur + "_sum", cur + "_count"))) else None
            assert fam, "line %d: %s outside its family (%s)" % (n, name, cur)
            v = float(value)  # NaN, +Inf and exponents included
            fams[fam]["samples"].append(
                (name, {k: unescape(v_) for k, v_ in LABEL_RE.findall(labels)}, v))
    for name, f in fams.items():
        assert f["type"], "%s has no TYPE" % name
        if f["type"] == "histogram":
            check_histogram(name, f["samples"])
    return fams


def check_histogram(name, samples):
    series = {}
    for sname, labels, v in samples:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            s["buckets"].append((float(labels["le"]), v))
        elif sname.endswith("_sum"):
            s["sum"] = v
        else:
            s["count"] = v
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        assert les == sorted(les) and les[-1] == math.inf, "%s%s: buckets %s" % (name, key, les)
        counts = [c for _, c in s["buckets"]]
        assert counts == sorted(counts), "%s%s: not cumulative" % (name, key)
        assert s["count"] == counts[-1] and s["sum"] is not None, "%s%s: count" % (name, key)


def value(fams, family, sample=None, **labels):
    for name, lab, v in fams[family]["samples"]:
        if name == (sample or family) and all(lab.get(k) == x for k, x in labels.items()):
            return v
    return None


def scrape(srv, path="/metrics"):
    with urllib.request.urlopen("http://%s%s" % (srv.metrics_addr, path), timeout=10) as r:
        return r.read().decode()


def start(srv):
    srv.start()
    srv.metrics_addr = re.search(r"metrics on ([0-9.]+:\d+)", srv.log_text()).group(1)
    return srv


class MetricsTest(E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="engram-e2e-obs-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        keyring = make_keyring(os.path.join(cls.tmp, "keyring"))
        cls.primary = Server("--metrics-listen", "127.0.0.1:0", tokens=TOKENS, keyring=keyring,
                             port=free_port())
        cls.addClassCleanup(cls.primary.close)
        start(cls.primary)
        cls.replica = Server("--metrics-listen", "127.0.0.1:0", "--role", "replica", "--primary",
                             cls.primary.addr, "--replica-token", REPL, "--replica-id", 'r"1\\',
                             tokens=TOKENS, keyring=keyring, port=free_port())
        cls.addClassCleanup(cls.replica.close)
        start(cls.replica)
        cls.c = cls.primary.client(AGENT)

    def test_exposition_parses_and_has_every_family(self):
        fams = parse(scrape(self.primary))
        for name in ("engram_rpc_total", "engram_rpc_duration_seconds", "engram_rpc_in_flight",
                     "engram_parked_reads", "engram_writer_batches_total", "engram_last_lsn",
                     "engram_swept_total", "engram_sweep_backlog",
                     "engram_last_sweep_timestamp_seconds", "engram_is_primary",
                     "process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                     "process_start_time_seconds", "engram_build_info",
                     "engram_replica_lag_records", "engram_replica_lag_seconds"):
            self.assertIn(name, fams)
        self.assertEqual(fams["engram_rpc_duration_seconds"]["type"], "histogram")
        self.assertEqual(value(fams, "engram_build_info", version="0.16.0"), 1)
        self.assertGreater(value(fams, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(fams, "process_max_fds"), value(fams, "process_open_fds"))
        self.assertGreater(value(fams, "process_open_fds"), 3)
        self.assertGreater(value(fams, "process_start_time_seconds"), 1.7e9)
        fams = parse(scrape(self.replica))
        self.assertIn("engram_replication_lag_records", fams)
        self.assertIn("engram_replication_lag_seconds", fams)

    def test_latency_histogram_counts_calls(self):
        key = dict(service="engram.v1.SessionService", method="CreateSession")
        before = value(parse(scrape(self.primary)), "engram_rpc_duration_seconds",
                       "engram_rpc_duration_seconds_count", **key)
        for _ in range(3):
            self.c.create(uid("u"))
        fams = parse(scrape(self.primary))
        self.assertEqual(value(fams, "engram_rpc_duration_seconds",
                               "engram_rpc_duration_seconds_count", **key), before + 3)
        self.assertGreater(value(fams, "engram_rpc_duration_seconds",
                                 "engram_rpc_duration_seconds_sum", **key), 0)

    def test_in_flight_counts_an_open_stream(self):
        key = dict(service="grpc.health.v1.Health", method="Watch")
        from grpc_health.v1 import health_pb2
        watch = self.c.channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        call = watch(health_pb2.HealthCheckRequest(), timeout=60)
        next(call)  # the stream is open: its first answer came
        self.assertEqual(value(parse(scrape(self.primary)), "engram_rpc_in_flight", **key), 1)
        call.cancel()
        self.wait_until(lambda: value(parse(scrape(self.primary)), "engram_rpc_in_flight",
                                      **key) == 0, 30, "the cancelled watch leaves")

    def test_replication_lag_both_sides(self):
        self.c.append(self.c.create(uid("u")).session_id, "x")

        def caught_up():
            p, r = parse(scrape(self.primary)), parse(scrape(self.replica))
            return (value(p, "engram_replica_lag_records", replica='r"1\\') == 0 and
                    value(p, "engram_replica_lag_seconds", replica='r"1\\') == 0 and
                    value(r, "engram_replication_lag_records") == 0 and
                    value(r, "engram_replication_lag_seconds") == 0 and
                    value(r, "engram_last_lsn") == value(p, "engram_last_lsn"))
        self.wait_until(caught_up, CONVERGE_TIMEOUT, "both sides report no lag",
                        nodes=(self.primary, self.replica))
        # A replica that stops acking: the primary sees it fall behind, in
        # records at once and in seconds as time passes; then catch up.
        os.kill(self.replica.pid, signal.SIGSTOP)
        try:
            self.c.append(self.c.create(uid("u")).session_id, "y")
            self.wait_until(lambda: (lambda p: value(p, "engram_replica_lag_records",
                                                     replica='r"1\\') >= 2 and
                                     value(p, "engram_replica_lag_seconds",
                                           replica='r"1\\') >= 0.5)(parse(scrape(self.primary))),
                            30, "the primary reports the stopped replica's lag")
        finally:
            os.kill(self.replica.pid, signal.SIGCONT)
        self.wait_until(caught_up, CONVERGE_TIMEOUT, "the replica catches up again",
                        nodes=(self.primary, self.replica))

    def test_unknown_paths_404(self):
        # Percent escapes are not decoded: only the raw path /metrics answers.
        for path in ("/", "/metric", "/metrics/x", "/favicon.ico", "/metrics%00", "/%6detrics"):
            with self.assertRaises(urllib.error.HTTPError) as e:
                scrape(self.primary, path)
            self.assertEqual(e.exception.code, 404, path)

    def test_scrapes_under_load_stay_whole(self):
        """Calls landing while a scrape renders never break the text."""
        stop = threading.Event()

        def load():
            while not stop.is_set():
                self.c.create(uid("u"))
        t = threading.Thread(target=load)
        t.start()
        try:
            for _ in range(20):
                parse(scrape(self.primary))
        finally:
            stop.set()
            t.join(30)
