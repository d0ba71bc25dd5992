"""
deploy/k8s, checked offline: every object of every manifest against the
Kubernetes API's own types (the models of the Kubernetes Python client,
Debian's python3-kubernetes), so a misspelt or misplaced field, a wrong
type or a missing required field fails here rather than at `kubectl apply`;
the pods the backup CronJob and the restore StatefulSet run meet Pod
Security "restricted"; and every `engram backup ...` flag their scripts use
is one the CLI has.

`kubectl create --dry-run=client` cannot do this without a cluster: it asks
the API server for its schema and its resource list. The test is skipped
where python3-kubernetes is not installed (scripts/deps.sh test installs it).
"""
import glob
import os
import re
import subprocess
import unittest

from harness import ENGRAM_CLI, REPO

try:
    import yaml
    from kubernetes import client as k8s
except ImportError:  # pragma: no cover - depends on the machine
    k8s = None

K8S_DIR = os.path.join(REPO, "deploy", "k8s")

# Fields newer than the models' API version (python3-kubernetes 22.6 knows
# Kubernetes 1.22): checked here by hand. The gRPC probe is from 1.24.
NEWER_FIELDS = {
    ("V1Probe", "grpc"): {"port": int, "service": str},
}


def model_class(api_version, kind):
    """V1CronJob for batch/v1 CronJob, V1Service for v1 Service."""
    version = api_version.rsplit("/", 1)[-1]
    return getattr(k8s, version[0].upper() + version[1:] + kind, None)


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


def documents():
    """(file name, object) for every object of every manifest."""
    for path in sorted(glob.glob(os.path.join(K8S_DIR, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield os.path.basename(path), doc


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


def objects_of_kind(kind):
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


@unittest.skipIf(k8s is None, "python3-kubernetes (and python3-yaml) not installed")
class ManifestTest(unittest.TestCase):
    def test_every_object_is_valid_for_its_kind(self):
        seen = 0
        for name, doc in documents():
            cls = model_class(doc.get("apiVersion", ""), doc.get("kind", ""))
            with self.subTest(file=name, kind=doc.get("kind"), name=doc.get("metadata", {}).get("name")):
                self.assertIsNotNone(cls, f"{name}: unknown apiVersion/kind {doc.get('apiVersion')} {doc.get('kind')}")
                errors = []
                check(doc, cls.__name__, f"{name}:{doc['kind']}", errors)
                self.assertEqual(errors, [])
                seen += 1
        self.assertGreaterEqual(seen, 8)

    def test_the_checker_catches_mistakes(self):
        cron = objects_of_kind("CronJob")["engram-backup"]
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for mutate, want in [
            (lambda p: p["containers"][0].update(securityContex={}), "no such field in V1Container"),
            (lambda p: p["containers"][0]["resources"].update(limits="1"), "want a map"),
            (lambda p: p["containers"][0].pop("name"), "`name`, must not be `None`"),
            (lambda p: p.update(restartPolicy=["Never"]), "want str"),
            (lambda p: p["containers"][0].update(readinessProbe={"grpc": {"prot": 1}}), "grpc.prot"),
        ]:
            bad = yaml.safe_load(yaml.safe_dump(pod))
            mutate(bad)
            errors = []
            check(bad, "V1PodSpec", "pod", errors)
            self.assertTrue(any(want in e for e in errors), f"{want!r} not in {errors}")

    def test_backup_cronjob(self):
        cron = objects_of_kind("CronJob")["engram-backup"]
        spec = cron["spec"]
        self.assertEqual(spec["concurrencyPolicy"], "Forbid")
        self.assertIn("successfulJobsHistoryLimit", spec)
        self.assertIn("failedJobsHistoryLimit", spec)
        self.assertIn("activeDeadlineSeconds", spec["jobTemplate"]["spec"])
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        self.assert_restricted(pod)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        self.assertEqual(claims, {"engram-backups"})
        self.assertIn("engram-backups", objects_of_kind("PersistentVolumeClaim"))
        script = pod["containers"][0]["args"][0]
        for step in ("backup create", "backup verify",
                     "backup prune /backups --keep-daily 30 --keep-weekly 12 --keep-monthly 12"):
            self.assertIn(step, script)
        # It backs up a pod of the headless service the StatefulSet names.
        sts = objects_of_kind("StatefulSet")["engram"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        for source in env["BACKUP_SOURCES"].split():
            self.assertRegex(source, rf"^engram-[1-9][0-9]*\.{sts['spec']['serviceName']}:50051$")
        self.assertIn(sts["spec"]["serviceName"], objects_of_kind("Service"))
        # The secret keys it mounts exist in the example secret.
        secret = objects_of_kind("Secret")["engram-secrets"]
        for v in pod["volumes"]:
            for item in v.get("secret", {}).get("items", []):
                self.assertIn(item["key"], secret["stringData"])

    def test_restore_statefulset(self):
        sts = objects_of_kind("StatefulSet")["engram-restore"]
        pod = sts["spec"]["template"]["spec"]
        self.assert_restricted(pod)
        self.assertRegex(pod["initContainers"][0]["args"][0], r"engram .*backup restore")
        self.assertIn(sts["spec"]["serviceName"], objects_of_kind("Service"))
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        self.assertEqual(env["ENGRAM_HEADLESS_SERVICE"], sts["spec"]["serviceName"])

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
        for name, doc in documents():
            for script in strings(doc):
                subs = set(re.findall(r"\bengram\b[^\n]*?\bbackup (\w+)", script))
                if not subs:
                    continue
                listed = ""
                for sub in subs:
                    line = re.search(rf"^  backup {sub}\b(.*)$", help_text, re.M)
                    self.assertIsNotNone(line, f"{name}: engram has no 'backup {sub}'")
                    listed += line.group(1)
                for flag in re.findall(r"(--[a-z][a-z-]*)", script):
                    self.assertTrue(re.search(rf"{flag}\b", listed) or flag in global_flags,
                                    f"{name}: no {flag} in 'backup {'/'.join(sorted(subs))}'")
                    used += 1
        self.assertGreater(used, 5)

    def assert_restricted(self, pod):
        """Pod Security "restricted", and a read-only root file system."""
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            self.assertIs(sc["allowPrivilegeEscalation"], False, c["name"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], c["name"])
            self.assertIs(sc["readOnlyRootFilesystem"], True, c["name"])
            self.assertIn("limits", c["resources"], c["name"])
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            self.assertIn("/tmp", mounts, c["name"])


if __name__ == "__main__":
    unittest.main()
