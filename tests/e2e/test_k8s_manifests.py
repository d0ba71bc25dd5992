"""
deploy/k8s and deploy/docker, checked offline.

Every kustomization under deploy/k8s (base, overlays/dev, overlays/ha,
backup, restore) is rendered with `kubectl kustomize`, and every object it
renders is checked against the Kubernetes API's own types (the models of
the Kubernetes Python client, Debian's python3-kubernetes), so a misspelt
or misplaced field, a wrong type or a missing required field fails here
rather than at `kubectl apply`. The one custom resource, the Prometheus
operator's ServiceMonitor, is checked against a small schema of its own
below. Then the properties the deployment depends on are asserted, so they
cannot regress: Pod Security "restricted" on every pod, no role from the
pod ordinal, Parallel pods, the probes (readiness = gRPC health, liveness
never), the drain fitting the grace period, PDBs, spreading, the
NetworkPolicies, the etcd topology of overlays/ha, the backup and restore
jobs; and the image: pinned bases, a numeric user, OCI labels, the
.dockerignore, an entrypoint with no role logic.

`kubectl create --dry-run=client` cannot do this without a cluster: it asks
the API server for its schema and its resource list. The checks fail where
python3-kubernetes (or python3-yaml) is not installed or kubectl is not on
PATH (`scripts/deps.sh test` installs them), rather than pass unseen.

The kustomizations are written for kustomize 2.0.3, the one in Debian 12's
kubectl (kubernetes-client 1.20), and render the same with later ones
(kubectl 1.21+, kustomize 4 and 5). Run this file with each kubectl first
on PATH; test_kustomize_2_dialect keeps newer fields out even where only a
newer kubectl is installed.
"""
import functools
import glob
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

from harness import ENGRAM_CLI, ENGRAMD, REPO

try:
    import yaml
    from kubernetes import client as k8s
except ImportError as e:  # pragma: no cover - depends on the machine
    k8s = None
    MISSING = ("%s: install python3-kubernetes and python3-yaml (scripts/deps.sh test does)"
               % e)

K8S_DIR = os.path.join(REPO, "deploy", "k8s")
DOCKER_DIR = os.path.join(REPO, "deploy", "docker")
KUBECTL = shutil.which("kubectl")

# Fields newer than the models' API version (python3-kubernetes 22.6 knows
# Kubernetes 1.22): checked here by hand. The gRPC probe is from 1.24.
NEWER_FIELDS = {
    ("V1Probe", "grpc"): {"port": int, "service": str},
}

# Custom resources: (apiVersion, kind) -> the type below that checks them.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "ServiceMonitor"}

# The part of the prometheus-operator's ServiceMonitor CRD that a monitor of
# a Service's named port uses: type name -> ({json field: type}, required).
# Types are those of check() below.
CUSTOM_TYPES = {
    "ServiceMonitor": ({"apiVersion": "str", "kind": "str", "metadata": "V1ObjectMeta",
                        "spec": "ServiceMonitorSpec"}, ["spec"]),
    "ServiceMonitorSpec": ({"selector": "V1LabelSelector",
                            "namespaceSelector": "ServiceMonitorNamespaceSelector",
                            "endpoints": "list[ServiceMonitorEndpoint]", "jobLabel": "str",
                            "targetLabels": "list[str]", "podTargetLabels": "list[str]",
                            "sampleLimit": "int"}, ["selector", "endpoints"]),
    "ServiceMonitorNamespaceSelector": ({"any": "bool", "matchNames": "list[str]"}, []),
    "ServiceMonitorEndpoint": ({"port": "str", "path": "str", "scheme": "str", "interval": "str",
                                "scrapeTimeout": "str", "honorLabels": "bool",
                                "params": "dict(str, list[str])"}, ["port"]),
}


def model_class(api_version, kind):
    """The type name that checks an object: V1CronJob for batch/v1 CronJob,
    V1Service for v1 Service, a CUSTOM_TYPES name for a custom resource."""
    if (api_version, kind) in CUSTOM_KINDS:
        return CUSTOM_KINDS[(api_version, kind)]
    version = api_version.rsplit("/", 1)[-1]
    cls = getattr(k8s, version[0].upper() + version[1:] + kind, None)
    return cls.__name__ if cls else None


def check_custom(value, typ, path, errors):
    fields, required = CUSTOM_TYPES[typ]
    if not isinstance(value, dict):
        errors.append(f"{path}: want a {typ} object, have {value!r}")
        return
    for key, v in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: no such field in {typ}")
        else:
            check(v, fields[key], f"{path}.{key}", errors)
    for key in required:
        if key not in value:
            errors.append(f"{path}: {typ} needs `{key}`")


def check(value, typ, path, errors):
    """Appends to errors every way value is not of the client's type string typ."""
    if typ == "object":  # IntOrString and free-form: anything
        return
    m = re.fullmatch(r"list\[(.+)\]", typ)
    if m:
        if not isinstance(value, list):
            errors.append(f"{path}: want a list, have {value!r}")
            return
        for i, v in enumerate(value):
            check(v, m.group(1), f"{path}[{i}]", errors)
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", typ)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: want a map, have {value!r}")
            return
        for k, v in value.items():
            check(v, m.group(1), f"{path}.{k}", errors)
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if typ in simple:
        # YAML reads `true` as bool, which is an int to Python.
        if not isinstance(value, simple[typ]) or (typ == "int" and isinstance(value, bool)):
            errors.append(f"{path}: want {typ}, have {value!r}")
        return
    if typ in CUSTOM_TYPES:
        check_custom(value, typ, path, errors)
        return
    cls = getattr(k8s, typ, None)
    if cls is None:
        errors.append(f"{path}: unknown type {typ}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: want a {typ} object, have {value!r}")
        return
    by_json = {j: attr for attr, j in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        if (typ, key) in NEWER_FIELDS:
            fields = NEWER_FIELDS[(typ, key)]
            for k, x in (v or {}).items():
                if k not in fields or not isinstance(x, fields[k]):
                    errors.append(f"{path}.{key}.{k}: not a field of {typ}.{key}, or of the wrong type")
            continue
        attr = by_json.get(key)
        if attr is None:
            errors.append(f"{path}.{key}: no such field in {typ}")
            continue
        check(v, cls.openapi_types[attr], f"{path}.{key}", errors)
        kwargs[attr] = v
    # The client's constructor refuses a missing required field (and some
    # enum values) with ValueError.
    try:
        cls(**kwargs)
    except ValueError as e:
        errors.append(f"{path}: {e}")


def kustomizations():
    """Every directory under deploy/k8s with a kustomization.yaml, relative."""
    found = glob.glob(os.path.join(K8S_DIR, "**", "kustomization.yaml"), recursive=True)
    return sorted(os.path.relpath(os.path.dirname(p), K8S_DIR) for p in found)


@functools.lru_cache(maxsize=None)
def render(rel):
    """The objects `kubectl kustomize deploy/k8s/REL` renders. Its stderr
    is not looked at: kustomize 4 and later warn there about the 2.0.3
    fields these kustomizations use."""
    if KUBECTL is None:
        raise AssertionError("no kubectl on PATH: scripts/deps.sh test installs kubernetes-client")
    out = subprocess.run([KUBECTL, "kustomize", os.path.join(K8S_DIR, rel)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {rel}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def secret_example():
    with open(os.path.join(K8S_DIR, "secret.example.yaml")) as f:
        return yaml.safe_load(f)


def strings(value):
    """Every string in a parsed document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def of_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_templates(objs):
    """(object, pod template) for every workload among objs."""
    for o in objs:
        if o["kind"] in ("StatefulSet", "Deployment", "Job", "DaemonSet"):
            yield o, o["spec"]["template"]
        elif o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]


def engram_sets(objs):
    """The StatefulSets whose pods run engramd."""
    return [o for o in objs if o["kind"] == "StatefulSet"
            and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "engram"]


def engramd_container(sts):
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "engramd")


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def flag_map(argv):
    """{flag: value} of an argv of `--flag=value` and `--flag value` items
    (a flag without a value: "")."""
    out, i = {}, 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 1
        out[flag] = value
        i += 1
    return out


def selects(selector, labels):
    """Whether a label selector's matchLabels (or a Service's selector) picks labels."""
    want = selector.get("matchLabels", selector) if selector else {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


# The deployable kustomizations (base, backup are parts of these).
DEPLOYABLE = ("overlays/dev", "overlays/ha", "restore")


class ManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if k8s is None:
            raise AssertionError(MISSING)

    def test_every_object_is_valid_for_its_kind(self):
        seen = 0
        rendered = [(rel, o) for rel in kustomizations() for o in render(rel)]
        rendered.append(("secret.example.yaml", secret_example()))
        for rel, doc in rendered:
            typ = model_class(doc.get("apiVersion", ""), doc.get("kind", ""))
            with self.subTest(kustomization=rel, kind=doc.get("kind"), name=doc["metadata"].get("name")):
                self.assertIsNotNone(typ, f"{rel}: unknown apiVersion/kind {doc.get('apiVersion')} {doc.get('kind')}")
                errors = []
                check(doc, typ, f"{rel}:{doc['kind']}", errors)
                self.assertEqual(errors, [])
                seen += 1
        self.assertGreaterEqual(seen, 30)

    def test_every_manifest_is_rendered(self):
        """No YAML file lies beside the kustomizations unchecked."""
        self.assertEqual(kustomizations(), ["backup", "base", "overlays/dev", "overlays/ha", "restore"])
        listed = set()
        for rel in kustomizations():
            with open(os.path.join(K8S_DIR, rel, "kustomization.yaml")) as f:
                k = yaml.safe_load(f)
            files = k.get("resources", []) + k.get("patchesStrategicMerge", [])
            files += [p["path"] for p in k.get("patchesJson6902", [])]
            listed |= {os.path.normpath(os.path.join(rel, r)) for r in files}
        for path in glob.glob(os.path.join(K8S_DIR, "**", "*.yaml"), recursive=True):
            rel = os.path.relpath(path, K8S_DIR)
            if os.path.basename(rel) in ("kustomization.yaml", "secret.example.yaml"):
                continue
            self.assertIn(rel, listed, f"{rel} is in no kustomization")

    def test_kustomize_2_dialect(self):
        """Only what kustomize 2.0.3 (Debian 12's kubectl 1.20) reads: it
        refuses an unknown field (`labels`), takes an inline `patches:`
        for a file list, and wants a parent directory under `bases:`
        (`resources:` are files). Newer kustomize reads all of these too."""
        known = {"apiVersion", "kind", "resources", "bases", "namespace", "namePrefix",
                 "nameSuffix", "commonLabels", "commonAnnotations", "images",
                 "patchesStrategicMerge", "patchesJson6902", "configMapGenerator",
                 "secretGenerator", "generatorOptions", "vars", "crds", "configurations"}
        for rel in kustomizations():
            with open(os.path.join(K8S_DIR, rel, "kustomization.yaml")) as f:
                k = yaml.safe_load(f)
            with self.subTest(kustomization=rel):
                self.assertEqual(set(k) - known, set())
                # commonLabels would be added to every selector too (a
                # NetworkPolicy's peers included): labels go in each object.
                self.assertNotIn("commonLabels", k)
                for r in k.get("resources", []) + k.get("patchesStrategicMerge", []):
                    self.assertTrue(os.path.isfile(os.path.join(K8S_DIR, rel, r)), r)
                for b in k.get("bases", []):
                    self.assertTrue(os.path.isfile(os.path.join(K8S_DIR, rel, b, "kustomization.yaml")), b)
                for p in k.get("patchesJson6902", []):
                    self.assertEqual(set(p), {"target", "path"})
                    self.assertEqual(set(p["target"]) - {"group", "version", "kind", "name", "namespace"}, set())

    def test_the_checker_catches_mistakes(self):
        cron = of_kind(render("backup"), "CronJob")["engram-backup"]
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for mutate, want in [
            (lambda p: p["containers"][0].update(securityContex={}), "no such field in V1Container"),
            (lambda p: p["containers"][0]["resources"].update(limits="1"), "want a map"),
            (lambda p: p["containers"][0].pop("name"), "`name`, must not be `None`"),
            (lambda p: p.update(restartPolicy=["Never"]), "want str"),
            (lambda p: p["containers"][0].update(readinessProbe={"grpc": {"prot": 1}}), "grpc.prot"),
            (lambda p: p["containers"][0].update(readinessProbe={"grpc": {"port": "grpc"}}), "grpc.port"),
        ]:
            bad = yaml.safe_load(yaml.safe_dump(pod))
            mutate(bad)
            errors = []
            check(bad, "V1PodSpec", "pod", errors)
            self.assertTrue(any(want in e for e in errors), f"{want!r} not in {errors}")
        monitor = of_kind(render("base"), "ServiceMonitor")["engram"]
        for mutate, want in [
            (lambda m: m["spec"]["endpoints"][0].update(prot="metrics"), "no such field in ServiceMonitorEndpoint"),
            (lambda m: m["spec"]["endpoints"][0].update(port=9090), "want str"),
            (lambda m: m["spec"].pop("selector"), "needs `selector`"),
            (lambda m: m["spec"]["selector"].update(matchLabel={}), "no such field in V1LabelSelector"),
        ]:
            bad = yaml.safe_load(yaml.safe_dump(monitor))
            mutate(bad)
            errors = []
            check(bad, "ServiceMonitor", "monitor", errors)
            self.assertTrue(any(want in e for e in errors), f"{want!r} not in {errors}")

    def test_every_pod_is_restricted(self):
        """Pod Security "restricted", a read-only root file system, limits."""
        for rel in DEPLOYABLE:
            for obj, tmpl in pod_templates(render(rel)):
                with self.subTest(kustomization=rel, name=obj["metadata"]["name"]):
                    self.assert_restricted(tmpl["spec"])

    def test_every_object_has_the_recommended_labels(self):
        for rel in DEPLOYABLE:
            for o in render(rel):
                with self.subTest(kustomization=rel, kind=o["kind"], name=o["metadata"]["name"]):
                    labels = o["metadata"].get("labels", {})
                    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                "app.kubernetes.io/component", "app.kubernetes.io/part-of",
                                "app.kubernetes.io/managed-by"):
                        self.assertIn(key, labels)
            for obj, tmpl in pod_templates(render(rel)):
                self.assertIn("app.kubernetes.io/name", tmpl["metadata"]["labels"])
                if "selector" in obj["spec"]:
                    self.assertTrue(selects(obj["spec"]["selector"], tmpl["metadata"]["labels"]))

    def test_no_role_from_the_ordinal(self):
        """Every pod of a StatefulSet shares one template: a role in it holds
        for all. Only dev, one pod, names one (primary); ha and the restore
        let etcd elect. Nothing looks at the pod's ordinal to decide."""
        for rel in DEPLOYABLE:
            for sts in engram_sets(render(rel)):
                env = env_of(engramd_container(sts))
                with self.subTest(kustomization=rel, name=sts["metadata"]["name"]):
                    self.assertNotIn("ENGRAM_PRIMARY", env)
                    self.assertNotIn("command", engramd_container(sts))
                    self.assertNotIn("args", engramd_container(sts))
                    if rel == "overlays/dev":
                        self.assertEqual(env.get("ENGRAM_ROLE"), "primary")
                        self.assertNotIn("ENGRAM_COORDINATOR", env)
                        self.assertEqual(sts["spec"]["replicas"], 1)
                    else:
                        self.assertNotIn("ENGRAM_ROLE", env)
                        self.assertRegex(env["ENGRAM_COORDINATOR"], r"^etcd://")
        with open(os.path.join(DOCKER_DIR, "entrypoint.sh")) as f:
            entrypoint = f.read()
        for word in ("HOSTNAME", "ENGRAM_ROLE", "ENGRAM_PRIMARY", "ordinal"):
            self.assertNotIn(word, entrypoint)

    def test_engram_pods(self):
        for rel in DEPLOYABLE:
            objs = render(rel)
            services = of_kind(objs, "Service")
            for sts in engram_sets(objs):
                with self.subTest(kustomization=rel, name=sts["metadata"]["name"]):
                    self.assert_engram_set(sts, services)

    def assert_engram_set(self, sts, services):
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        c = engramd_container(sts)
        env = env_of(c)
        # A lagging or deposed pod 0 must not hold the others back.
        self.assertEqual(spec["podManagementPolicy"], "Parallel")
        # Readiness is the gRPC health of "" (what clients get); liveness
        # and startup only see the process, so a lagging pod is not killed.
        self.assertEqual(c["readinessProbe"]["grpc"], {"port": 50051, "service": ""})
        for probe in ("livenessProbe", "startupProbe"):
            self.assertEqual(set(c[probe]) & {"grpc", "httpGet", "exec"}, set(), probe)
            self.assertIn("tcpSocket", c[probe], probe)
        # The kubelet kills after the grace period: the preStop sleep and
        # engramd's own drain must fit in it.
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        drain_ms = int(pre_stop[1]) * 1000 + int(env["ENGRAM_SHUTDOWN_GRACE_MS"])
        self.assertGreater(pod["terminationGracePeriodSeconds"] * 1000, drain_ms)
        # Clients that balance per connection re-resolve now and then.
        self.assertGreater(int(env["ENGRAM_MAX_CONNECTION_AGE_MS"]), 0)
        # ENGRAM_* service-link variables would be read as flags.
        self.assertIs(pod["enableServiceLinks"], False)
        self.assertIs(pod["automountServiceAccountToken"], False)
        # The advertised address is the pod's name under the StatefulSet's
        # own Service, which lists pods before they are ready.
        peers = services[spec["serviceName"]]
        self.assertEqual(env["ENGRAM_ADVERTISE_ADDRESS"],
                         f"$(POD_NAME).{spec['serviceName']}.$(NAMESPACE).svc:50051")
        self.assertEqual(peers["spec"]["clusterIP"], "None")
        self.assertIs(peers["spec"]["publishNotReadyAddresses"], True)
        self.assertTrue(selects(peers["spec"]["selector"], labels))
        self.assertEqual(env["ENGRAM_REPLICA_ID"], "$(POD_NAME)")
        # $(VAR) is expanded only from variables defined before it.
        defined = set()
        for e in c["env"]:
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                self.assertIn(ref, defined, f"{e['name']} uses $({ref}) before it is defined")
            defined.add(e["name"])
        # One engramd per node.
        spread = [t for t in pod["topologySpreadConstraints"]
                  if t["topologyKey"] == "kubernetes.io/hostname"]
        self.assertEqual(spread[0]["whenUnsatisfiable"], "DoNotSchedule")
        self.assertTrue(selects(spread[0]["labelSelector"], labels))
        # The secret's files the pod mounts are keys of the example secret.
        self.assert_secret_items(pod)

    def test_pdbs_and_policies_select_their_pods(self):
        for rel in ("overlays/dev", "overlays/ha"):
            objs = render(rel)
            pdbs = of_kind(objs, "PodDisruptionBudget")
            policies = of_kind(objs, "NetworkPolicy")
            for sts in of_kind(objs, "StatefulSet").values():
                labels = sts["spec"]["template"]["metadata"]["labels"]
                with self.subTest(kustomization=rel, name=sts["metadata"]["name"]):
                    pdb = [p for p in pdbs.values() if selects(p["spec"]["selector"], labels)]
                    self.assertEqual(len(pdb), 1)
                    self.assertEqual(pdb[0]["spec"].get("maxUnavailable"), 1)
                    self.assertTrue([p for p in policies.values() if selects(p["spec"]["podSelector"], labels)])
            for obj, tmpl in pod_templates(objs):
                with self.subTest(kustomization=rel, name=obj["metadata"]["name"]):
                    self.assertTrue([p for p in policies.values()
                                     if selects(p["spec"]["podSelector"], tmpl["metadata"]["labels"])])

    def test_network_policies(self):
        objs = render("overlays/ha")
        pods = {o["metadata"]["name"]: t["metadata"]["labels"] for o, t in pod_templates(objs)}
        policies = of_kind(objs, "NetworkPolicy")

        def allowed(policy, direction, peer_labels, port):
            """Whether one rule of policy lets peer_labels (None: a pod of
            no workload here, e.g. a client) through on port."""
            key = "from" if direction == "ingress" else "to"
            for rule in policy["spec"].get(direction, []):
                if port not in [p["port"] for p in rule.get("ports", [{"port": port}])]:
                    continue
                peers = rule.get(key)
                if peers is None:
                    return True
                if peer_labels and any("podSelector" in p and "namespaceSelector" not in p
                                       and selects(p["podSelector"], peer_labels) for p in peers):
                    return True
            return False

        engram, etcd, backup = policies["engram"], policies["etcd"], policies["engram-backup"]
        for policy in (engram, etcd, backup):
            self.assertEqual(sorted(policy["spec"]["policyTypes"]), ["Egress", "Ingress"])
        # clients -> engramd; engramd <-> engramd; engramd -> etcd.
        self.assertTrue(allowed(engram, "ingress", None, 50051))
        self.assertTrue(allowed(engram, "egress", pods["engram"], 50051))
        self.assertTrue(allowed(engram, "egress", pods["etcd"], 2379))
        self.assertTrue(allowed(etcd, "ingress", pods["engram"], 2379))
        self.assertTrue(allowed(etcd, "ingress", pods["etcd"], 2380))
        self.assertTrue(allowed(etcd, "egress", pods["etcd"], 2380))
        self.assertFalse(allowed(etcd, "ingress", None, 2379))
        self.assertFalse(allowed(etcd, "ingress", pods["engram-backup"], 2379))
        # Metrics only for Prometheus; the backup job reaches engramd only.
        self.assertFalse(allowed(engram, "ingress", None, 9090))
        self.assertFalse(allowed(engram, "ingress", pods["etcd"], 9090))
        self.assertTrue(allowed(backup, "egress", pods["engram"], 50051))
        self.assertFalse(allowed(backup, "egress", pods["etcd"], 2379))
        self.assertFalse(backup["spec"].get("ingress"))
        # DNS for every pod that has an egress policy.
        for policy in (engram, etcd, backup):
            self.assertTrue(any(p.get("port") == 53 and p.get("protocol") == "UDP"
                                for r in policy["spec"]["egress"] for p in r.get("ports", [])))

    def test_clients_and_metrics_services(self):
        objs = render("overlays/ha")
        services = of_kind(objs, "Service")
        labels = engram_sets(objs)[0]["spec"]["template"]["metadata"]["labels"]
        # dns:///engram-headless + round_robin: ready pods only, one
        # address each.
        clients = services["engram-headless"]["spec"]
        self.assertEqual(clients["clusterIP"], "None")
        self.assertFalse(clients.get("publishNotReadyAddresses", False))
        self.assertTrue(selects(clients["selector"], labels))
        self.assertEqual([p["port"] for p in clients["ports"]], [50051])
        with open(os.path.join(K8S_DIR, "README.md")) as f:
            readme = f.read()
        for words in ("dns:///engram-headless.", "round_robin"):
            self.assertTrue(words in readme, f"README.md does not name {words}")
        # The ServiceMonitor scrapes a Service with every pod, ready or not.
        monitor = of_kind(objs, "ServiceMonitor")["engram"]["spec"]
        scraped = [s for s in services.values() if selects(monitor["selector"], s["metadata"]["labels"])]
        self.assertEqual(len(scraped), 1)
        self.assertTrue(selects(scraped[0]["spec"]["selector"], labels))
        self.assertIs(scraped[0]["spec"]["publishNotReadyAddresses"], True)
        ports = {p["name"] for p in scraped[0]["spec"]["ports"]}
        for endpoint in monitor["endpoints"]:
            self.assertIn(endpoint["port"], ports)

    def test_ha_topology(self):
        """3 engramd elected through 3 etcd members of its own, every write
        applied by a replica before it is acknowledged. deploy/local runs
        the same (README.md's flag table)."""
        objs = render("overlays/ha")
        sts = engram_sets(objs)[0]
        env = env_of(engramd_container(sts))
        self.assertEqual(sts["spec"]["replicas"], 3)
        self.assertEqual(env["ENGRAM_SYNC_REPLICAS"], "1")
        etcd = of_kind(objs, "StatefulSet")["etcd"]
        self.assertEqual(etcd["spec"]["replicas"], 3)
        self.assertEqual(etcd["spec"]["podManagementPolicy"], "Parallel")
        service = of_kind(objs, "Service")[etcd["spec"]["serviceName"]]
        self.assertEqual(service["spec"]["clusterIP"], "None")
        self.assertIs(service["spec"]["publishNotReadyAddresses"], True)
        name = etcd["spec"]["serviceName"]
        members = ",".join(f"etcd-{i}.{name}.$(NAMESPACE).svc:2379" for i in range(3))
        self.assertEqual(env["ENGRAM_COORDINATOR"], f"etcd://{members}/engram")
        container = etcd["spec"]["template"]["spec"]["containers"][0]
        self.assertRegex(container["image"], r"^quay\.io/coreos/etcd:v3\.4\.\d+(@sha256:[0-9a-f]{64})?$")
        cluster = next(a for a in container["args"] if a.startswith("--initial-cluster="))
        self.assertEqual(cluster.count("=http://"), 3)
        # A member without a leader is unready, never restarted for it.
        self.assertIn("tcpSocket", container["livenessProbe"])
        with open(os.path.join(K8S_DIR, "README.md")) as f:
            readme = f.read()
        for var in env:
            if var.startswith("ENGRAM_"):
                flag = "--" + var[len("ENGRAM_"):].lower().replace("_", "-")
                self.assertTrue(f"`{flag}" in readme, f"{var}: no `{flag} in README.md's flag table")

    def test_deploy_local_runs_the_same_topology(self):
        """deploy/local (the ha topology as local processes, for development
        and the failover tests) and overlays/ha must not drift apart: as many
        etcd members and engramd, the same etcd flags, and the same engramd
        settings (the base's included), but for those that differ on purpose,
        each listed below with why."""
        if not (os.access(ENGRAMD, os.X_OK) and os.access(ENGRAM_CLI, os.X_OK)):
            # LocalCluster makes its keyring with the CLI.
            self.skipTest(f"no engramd and engram CLI at {ENGRAMD}, {ENGRAM_CLI}")
        spec = importlib.util.spec_from_file_location(
            "local_cluster", os.path.join(REPO, "deploy", "local", "cluster.py"))
        local = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(local)
        objs = render("overlays/ha")
        sts = engram_sets(objs)[0]
        etcd = of_kind(objs, "StatefulSet")["etcd"]
        with tempfile.TemporaryDirectory() as d:
            c = local.LocalCluster(d, engramd=ENGRAMD, cli=ENGRAM_CLI)  # made, not started
            self.assertEqual(len(c.nodes), sts["spec"]["replicas"])
            self.assertEqual(len(c.etcd), etcd["spec"]["replicas"])
            here_etcd = flag_map(c.etcd[0].argv()[1:])
            here = flag_map(c.nodes[0].argv()[1:])

        # etcd: the members' flags.
        there_etcd = flag_map(etcd["spec"]["template"]["spec"]["containers"][0]["args"])
        etcd_own = {
            "--name": "a member's name: its pod's there, etcd-N here",
            "--data-dir": "a path",
            "--listen-client-urls": "addresses: pod DNS names there, 127.0.0.1 and free ports here",
            "--advertise-client-urls": "addresses",
            "--listen-peer-urls": "addresses",
            "--initial-advertise-peer-urls": "addresses",
            "--initial-cluster": "addresses",
            "--listen-metrics-urls": "an address for the readiness probe and Prometheus there; "
                                     "cluster.py asks etcdctl whether a member is healthy",
            "--initial-cluster-token": "new for each local cluster, so that two on one host "
                                       "(test runs side by side) never take each other's members",
            "--logger": "local members log to a file that a failed test prints: warnings only",
            "--log-level": "the same",
        }
        self.assert_same_but(there_etcd, here_etcd, etcd_own, "etcd")

        # engramd: ENGRAM_ variables are its flags; the entrypoint turns
        # REPLICA_TOKEN_FILE into --replica-token and copies KEYRING_SECRET
        # to --keyring's path; POD_NAME and NAMESPACE are parts of values.
        env = env_of(engramd_container(sts))
        there = {"--" + k[len("ENGRAM_"):].lower().replace("_", "-"): v
                 for k, v in env.items() if k.startswith("ENGRAM_")}
        there["--replica-token"] = env["REPLICA_TOKEN_FILE"]
        self.assertEqual(set(env) - {k for k in env if k.startswith("ENGRAM_")},
                         {"POD_NAME", "NAMESPACE", "KEYRING_SECRET", "REPLICA_TOKEN_FILE"})
        engramd_own = {
            "--listen": "addresses: pod DNS names there, 127.0.0.1 and free ports here",
            "--advertise-address": "addresses",
            "--metrics-listen": "Prometheus scrapes the pods there; nothing scrapes a local cluster",
            "--data-dir": "a path",
            "--keyring": "a path",
            "--tokens": "a path",
            "--replica-id": "a node's name: its pod's there, node-N here",
            "--replica-token": "a secret: read from the secret's file there, made for each "
                               "local cluster here",
            "--coordinator": "etcd's addresses differ; the prefix and the member count are "
                             "compared below",
        }
        self.assert_same_but(there, here, engramd_own, "engramd")
        there_url, here_url = there["--coordinator"], here["--coordinator"]
        self.assertEqual(here_url.rsplit("/", 1)[1], there_url.rsplit("/", 1)[1], "the prefix")
        self.assertEqual(here_url.count(","), there_url.count(","), "etcd members named")

    def assert_same_but(self, there, here, own, what):
        """there (overlays/ha) and here (deploy/local) hold the same flags
        and values, but for the flags in own (each in one of them at least,
        so that the list cannot go stale)."""
        for flag in own:
            self.assertTrue(flag in there or flag in here, f"{what}: {flag} is in neither")
        self.assertEqual({k: v for k, v in here.items() if k not in own},
                         {k: v for k, v in there.items() if k not in own},
                         f"{what}: deploy/local (first) differs from overlays/ha")

    def test_every_engram_variable_is_a_flag(self):
        """An ENGRAM_ variable engramd does not know is silently ignored:
        a misspelt ENGRAM_SYNC_REPLICA would leave writes unprotected."""
        if not os.access(ENGRAMD, os.X_OK):
            self.skipTest(f"no engramd at {ENGRAMD}")
        usage = subprocess.run([ENGRAMD, "--help"], capture_output=True, text=True, timeout=10)
        known = set(re.findall(r"\b(ENGRAM_[A-Z0-9_]+)\b", usage.stdout + usage.stderr))
        self.assertIn("ENGRAM_COORDINATOR", known)
        for rel in DEPLOYABLE:
            for obj, tmpl in pod_templates(render(rel)):
                for c in tmpl["spec"].get("initContainers", []) + tmpl["spec"]["containers"]:
                    for var in env_of(c):
                        if var.startswith("ENGRAM_") and c["name"] == "engramd":
                            self.assertIn(var, known, f"{rel} {obj['metadata']['name']}")

    def test_backup_cronjob(self):
        objs = render("overlays/ha")
        cron = of_kind(objs, "CronJob")["engram-backup"]
        spec = cron["spec"]
        self.assertEqual(spec["concurrencyPolicy"], "Forbid")
        self.assertIn("successfulJobsHistoryLimit", spec)
        self.assertIn("failedJobsHistoryLimit", spec)
        self.assertIn("activeDeadlineSeconds", spec["jobTemplate"]["spec"])
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        self.assertEqual(claims, {"engram-backups"})
        self.assertIn("engram-backups", of_kind(objs, "PersistentVolumeClaim"))
        script = pod["containers"][0]["args"][0]
        for step in ("backup create", "backup verify",
                     "backup prune /backups --keep-daily 30 --keep-weekly 12 --keep-monthly 12"):
            self.assertIn(step, script)
        # It asks every pod (etcd may elect any of them) for a replica.
        sts = engram_sets(objs)[0]
        env = env_of(pod["containers"][0])
        want = [f"engram-{i}.{sts['spec']['serviceName']}:50051" for i in range(sts["spec"]["replicas"])]
        self.assertEqual(env["BACKUP_SOURCES"].split(), want)
        self.assert_secret_items(pod)

    def test_restore_statefulset(self):
        objs = render("restore")
        sts = of_kind(objs, "StatefulSet")["engram-restore"]
        pod = sts["spec"]["template"]["spec"]
        self.assertRegex(pod["initContainers"][0]["args"][0], r"engram .*backup restore")
        # Alone at first, so the restored node is the only candidate.
        self.assertEqual(sts["spec"]["replicas"], 1)
        env = env_of(engramd_container(sts))
        ha = env_of(engramd_container(engram_sets(render("overlays/ha"))[0]))
        # Its own keys in the ha overlay's etcd.
        self.assertEqual(env["ENGRAM_COORDINATOR"].rsplit("/", 1)[0], ha["ENGRAM_COORDINATOR"].rsplit("/", 1)[0])
        self.assertNotEqual(env["ENGRAM_COORDINATOR"], ha["ENGRAM_COORDINATOR"])
        for var in ("ENGRAM_SYNC_REPLICAS", "ENGRAM_LEASE_TTL_S", "ENGRAM_FAILOVER_MAX_LAG",
                    "ENGRAM_SHUTDOWN_GRACE_MS", "ENGRAM_MAX_CONNECTION_AGE_MS", "ENGRAM_DATA_DIR"):
            self.assertEqual(env[var], ha[var], var)
        # Its pods are selected by etcd's policy (they are engram pods).
        etcd = of_kind(render("overlays/ha"), "NetworkPolicy")["etcd"]
        labels = sts["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(any(selects(p["podSelector"], labels)
                            for r in etcd["spec"]["ingress"] for p in r.get("from", []) if "podSelector" in p))

    def test_scripts_use_the_cli_flags_it_has(self):
        """A container script that runs `engram ... backup SUB` uses only
        flags that `engram help` lists for one of its SUBs or as global
        options (a restore script builds its arguments over several lines)."""
        if not os.access(ENGRAM_CLI, os.X_OK):
            self.skipTest(f"no CLI at {ENGRAM_CLI}")
        help_text = subprocess.run([ENGRAM_CLI, "help"], capture_output=True, text=True,
                                   timeout=10).stdout
        if "backup create" not in help_text:
            self.skipTest("this CLI has no backup commands")
        global_flags = set(re.findall(r"^  (--[a-z-]+)", help_text.split("global options", 1)[1], re.M))
        used = 0
        for rel in ("overlays/ha", "restore"):
            for doc in render(rel):
                for script in strings(doc):
                    subs = set(re.findall(r"\bengram\b[^\n]*?\bbackup (\w+)", script))
                    if not subs:
                        continue
                    listed = ""
                    for sub in subs:
                        line = re.search(rf"^  backup {sub}\b(.*)$", help_text, re.M)
                        self.assertIsNotNone(line, f"{rel}: engram has no 'backup {sub}'")
                        listed += line.group(1)
                    for flag in re.findall(r"(--[a-z][a-z-]*)", script):
                        self.assertTrue(re.search(rf"{flag}\b", listed) or flag in global_flags,
                                        f"{rel}: no {flag} in 'backup {'/'.join(sorted(subs))}'")
                        used += 1
        self.assertGreater(used, 5)

    def assert_secret_items(self, pod):
        secret = secret_example()
        for v in pod["volumes"]:
            for item in v.get("secret", {}).get("items", []):
                self.assertEqual(v["secret"]["secretName"], secret["metadata"]["name"])
                self.assertIn(item["key"], secret["stringData"])

    def assert_restricted(self, pod):
        """Pod Security "restricted", a read-only root file system, a memory
        limit, a writable /tmp."""
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["runAsUser"], 10001)
        self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        self.assertIs(pod["automountServiceAccountToken"], False)
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            self.assertIs(sc["allowPrivilegeEscalation"], False, c["name"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], c["name"])
            self.assertNotIn("add", sc["capabilities"], c["name"])
            self.assertNotIn("privileged", sc, c["name"])
            self.assertIs(sc["readOnlyRootFilesystem"], True, c["name"])
            self.assertIn("memory", c["resources"]["limits"], c["name"])
            self.assertIn("memory", c["resources"]["requests"], c["name"])
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            self.assertIn("/tmp", mounts, c["name"])
        for v in pod.get("volumes", []):
            self.assertNotIn("hostPath", v)


class MissingModelsTest(unittest.TestCase):
    def test_fails_without_python3_kubernetes(self):
        """Without the models the manifests go unchecked: that must fail,
        naming the package, not pass as skipped."""
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, "kubernetes"))
            with open(os.path.join(d, "kubernetes", "__init__.py"), "w") as f:
                f.write('raise ImportError("No module named \'kubernetes\' (hidden)")\n')
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [d, env.get("PYTHONPATH")]))
            run = subprocess.run([sys.executable, "-m", "unittest",
                                  "test_k8s_manifests.ManifestTest.test_every_pod_is_restricted"],
                                 cwd=os.path.dirname(os.path.abspath(__file__)), env=env,
                                 capture_output=True, text=True, timeout=120)
        self.assertNotEqual(run.returncode, 0, run.stderr)
        self.assertIn("install python3-kubernetes", run.stderr)
        self.assertNotIn("skipped", run.stderr)


class DockerTest(unittest.TestCase):
    def read(self, *path):
        with open(os.path.join(REPO, *path)) as f:
            return f.read()

    def test_dockerfile(self):
        text = self.read("deploy", "docker", "Dockerfile")
        bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
        self.assertEqual(len(bases), 2)
        for base in bases:
            # A Debian point release, never a moving "12", "bookworm" or "latest".
            self.assertRegex(base, r"^debian:12\.\d+(-slim)?(@sha256:[0-9a-f]{64})?$")
        self.assertRegex(bases[-1], r"-slim")
        # Numeric, and the user every pod runs as.
        self.assertRegex(text, r"(?m)^USER 10001:10001$")
        self.assertRegex(text, r"(?m)^ARG VERSION=")
        for label in ("title", "version", "revision"):
            self.assertIn(f"org.opencontainers.image.{label}=", text)
        self.assertIn('org.opencontainers.image.version="${VERSION}"', text)

    def test_dockerignore(self):
        lines = set(self.read(".dockerignore").split("\n"))
        for pattern in (".git", "data", "**/data", "build", "build-*", "**/*.mdb", "**/keyring",
                        "**/*.egb"):
            self.assertIn(pattern, lines)

    def test_entrypoint(self):
        """It copies the keyring owner-only, reads the replica token from its
        file, and runs engramd with its arguments and environment as given."""
        with tempfile.TemporaryDirectory() as d:
            fake = os.path.join(d, "engramd")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT/args"\nenv > "$OUT/env"\n')
            os.chmod(fake, 0o755)
            secret = os.path.join(d, "keyring.secret")
            with open(secret, "w") as f:
                f.write("primary 1\n")
            os.chmod(secret, 0o440)
            token = os.path.join(d, "replica-token")
            with open(token, "w") as f:
                f.write("s3cret\n")
            env = {"PATH": f"{d}:/usr/bin:/bin", "OUT": d, "HOSTNAME": "engram-0",
                   "KEYRING_SECRET": secret, "ENGRAM_KEYRING": os.path.join(d, "keyring"),
                   "REPLICA_TOKEN_FILE": token, "ENGRAM_SYNC_REPLICAS": "1"}
            subprocess.run(["/bin/sh", os.path.join(DOCKER_DIR, "entrypoint.sh"), "--workers", "2"],
                           env=env, check=True, timeout=10)
            with open(os.path.join(d, "args")) as f:
                self.assertEqual(f.read().split("\n"), ["--workers", "2", ""])
            with open(os.path.join(d, "env")) as f:
                seen = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
            self.assertEqual(seen["ENGRAM_REPLICA_TOKEN"], "s3cret")
            self.assertEqual(seen["ENGRAM_SYNC_REPLICAS"], "1")
            # Pod 0 is not made anything: no role, no primary.
            self.assertNotIn("ENGRAM_ROLE", seen)
            self.assertNotIn("ENGRAM_PRIMARY", seen)
            # engramd refuses a keyring that group or others may read.
            mode = stat.S_IMODE(os.stat(os.path.join(d, "keyring")).st_mode)
            self.assertEqual(mode & 0o077, 0, oct(mode))


if __name__ == "__main__":
    unittest.main()
